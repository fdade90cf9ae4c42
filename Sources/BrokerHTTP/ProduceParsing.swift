import BrokerModel
import BrokerRuntime

/// Turns a produce request body into records. Three forms (PRODUCT.md "curl-first"):
/// - raw body (`text/plain`, `application/octet-stream`, or curl's default form type): one record,
///   key/partition/timestamp/headers from query parameters;
/// - `application/json`: `{"records":[{...}]}`;
/// - `application/x-ndjson`: one record object per line (blank lines ignored).
///
/// A record object: `key` / `value` (a JSON string is stored as its UTF-8 text, `null` as a null
/// field, any other JSON value as its exact JSON text), or `key_base64` / `value_base64` for bytes;
/// `headers` as an object `{"name":"value"}` or an array `[{"key":"name","value":"v"}]`;
/// `partition`; `timestamp` in milliseconds since the epoch.
enum ProduceParsing {
    static func records(body: [UInt8], contentType: String?, query: [(name: String, value: String)]) throws(BrokerError) -> [ProduceRecord] {
        let media = MediaType(contentType)
        switch media.essence {
        case MediaType.json:
            return try jsonRecords(body)
        case MediaType.ndjson:
            return try ndjsonRecords(body)
        case MediaType.text, MediaType.octetStream, MediaType.form, "":
            return [try rawRecord(body, query: query)]
        default:
            throw .unsupportedMediaType(
                "Content-Type '\(contentType ?? "")' is not supported for produce; use application/json, application/x-ndjson, text/plain or application/octet-stream")
        }
    }

    static func rawRecord(_ body: [UInt8], query: [(name: String, value: String)]) throws(BrokerError) -> ProduceRecord {
        var record = ProduceRecord(value: body)
        for (name, value) in query {
            switch name {
            case "key": record.key = Array(value.utf8)
            case "partition": record.partition = try partition(value)
            case "timestamp":
                guard let t = Int64(value), t >= 0 else { throw .badRequest("timestamp must be a non-negative integer (milliseconds since the epoch), got '\(value)'") }
                record.timestamp = t
            case "header":
                guard let colon = value.firstIndex(of: ":") else { throw .badRequest("header must be given as name:value, got '\(value)'") }
                record.headers.append(RecordHeader(key: String(value[..<colon]), value: Array(value[value.index(after: colon)...].utf8)))
            default: continue
            }
        }
        return record
    }

    static func partition(_ text: String) throws(BrokerError) -> PartitionID {
        guard let p = Int32(text), p >= 0 else { throw .badRequest("partition must be a non-negative integer, got '\(text)'") }
        return PartitionID(p)
    }

    static func jsonRecords(_ body: [UInt8]) throws(BrokerError) -> [ProduceRecord] {
        let items = try recordItems(body)
        var out: [ProduceRecord] = []
        out.reserveCapacity(items.count)
        for (i, item) in items.enumerated() { out.append(try record(item, body: body, context: "records[\(i)]")) }
        return out
    }

    /// The record objects of a `{"records":[...]}` body (at least one), not yet checked one by one.
    /// Shared with the REST Proxy v2 dialect, whose records differ but whose envelope is the same.
    static func recordItems(_ body: [UInt8]) throws(BrokerError) -> [JSONNode] {
        let root: JSONNode
        do { root = try JSONParser.parse(body) } catch { throw .badRequest("request body is not valid JSON: \(error)") }
        guard root.objectValue != nil else { throw .badRequest("request body must be a JSON object {\"records\":[...]}, got \(root.typeName)") }
        guard let list = root["records"] else { throw .badRequest("request body needs a \"records\" array") }
        guard let items = list.arrayValue else { throw .badRequest("\"records\" must be an array, got \(list.typeName)") }
        guard !items.isEmpty else { throw .badRequest("\"records\" must hold at least one record") }
        return items
    }

    static func ndjsonRecords(_ body: [UInt8]) throws(BrokerError) -> [ProduceRecord] {
        var out: [ProduceRecord] = []
        var lineStart = 0
        var lineNumber = 0
        while lineStart <= body.count {
            var end = lineStart
            while end < body.count && body[end] != 0x0A { end += 1 }
            lineNumber += 1
            var trimmedEnd = end
            if trimmedEnd > lineStart && body[trimmedEnd - 1] == 0x0D { trimmedEnd -= 1 }
            if body[lineStart..<trimmedEnd].contains(where: { $0 != 0x20 && $0 != 0x09 }) {
                let node: JSONNode
                do { node = try JSONParser.parse(body, range: lineStart..<trimmedEnd) } catch {
                    throw .badRequest("line \(lineNumber) is not valid JSON: \(error)")
                }
                out.append(try record(node, body: body, context: "line \(lineNumber)"))
            }
            lineStart = end + 1
        }
        guard !out.isEmpty else { throw .badRequest("the NDJSON body holds no records") }
        return out
    }

    static func record(_ node: JSONNode, body: [UInt8], context: String) throws(BrokerError) -> ProduceRecord {
        guard let members = node.objectValue else { throw .badRequest("\(context) must be a JSON object, got \(node.typeName)") }
        var record = ProduceRecord(value: nil)
        var sawValue = false
        for (name, field) in members {
            switch name {
            case "key": record.key = bytes(of: field, body: body)
            case "value":
                record.value = bytes(of: field, body: body)
                sawValue = true
            case "key_base64": record.key = try base64(field, "\(context).key_base64")
            case "value_base64":
                record.value = try base64(field, "\(context).value_base64")
                sawValue = true
            case "partition":
                guard let p = field.int64Value, p >= 0, p <= Int64(Int32.max) else {
                    throw .badRequest("\(context).partition must be a non-negative integer")
                }
                record.partition = PartitionID(Int32(p))
            case "timestamp":
                guard let t = field.int64Value, t >= 0 else { throw .badRequest("\(context).timestamp must be a non-negative integer (milliseconds since the epoch)") }
                record.timestamp = t
            case "headers": record.headers = try headers(field, body: body, context: "\(context).headers")
            default:
                throw .badRequest("\(context) has an unknown field \"\(name)\"; known fields: key, key_base64, value, value_base64, headers, partition, timestamp")
            }
        }
        guard sawValue else { throw .badRequest("\(context) needs a \"value\" (or \"value_base64\"); use \"value\": null for a tombstone") }
        return record
    }

    /// A JSON string is stored as its text; null as a null field; anything else as its exact JSON text.
    static func bytes(of node: JSONNode, body: [UInt8]) -> [UInt8]? {
        switch node.value {
        case .null: nil
        case .string(let s): Array(s.utf8)
        default: Array(body[node.range])
        }
    }

    static func base64(_ node: JSONNode, _ context: String) throws(BrokerError) -> [UInt8]? {
        if node.isNull { return nil }
        guard let s = node.stringValue else { throw .badRequest("\(context) must be a base64 string") }
        guard let decoded = Base64.decode(s) else { throw .badRequest("\(context) is not valid base64") }
        return decoded
    }

    static func headers(_ node: JSONNode, body: [UInt8], context: String) throws(BrokerError) -> [RecordHeader] {
        if node.isNull { return [] }
        if let members = node.objectValue {
            return members.map { RecordHeader(key: $0.key, value: bytes(of: $0.value, body: body)) }
        }
        guard let items = node.arrayValue else { throw .badRequest("\(context) must be an object or an array of {\"key\",\"value\"}") }
        var out: [RecordHeader] = []
        for (i, item) in items.enumerated() {
            guard let key = item["key"]?.stringValue else { throw .badRequest("\(context)[\(i)] needs a string \"key\"") }
            var value: [UInt8]?
            if let v = item["value"] { value = bytes(of: v, body: body) }
            if let v = item["value_base64"] { value = try base64(v, "\(context)[\(i)].value_base64") }
            out.append(RecordHeader(key: key, value: value))
        }
        return out
    }
}
