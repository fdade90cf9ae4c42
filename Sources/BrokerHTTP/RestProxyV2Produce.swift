import BrokerModel
import BrokerRuntime

/// Produce bodies of the Kafka REST Proxy v2 dialect (design note RESTPROXY_V2.md):
/// `{"records":[{"key","value","partition","headers","timestamp"}]}` where the request's media type
/// says how `key` and `value` are embedded. Pure: bytes in, `ProduceRecord`s or a v2 error out.
///
/// - `application/vnd.kafka.binary.v2+json`: base64 strings;
/// - `application/vnd.kafka.json.v2+json` (and plain `application/json`): any JSON value, stored as
///   its exact JSON text (so the string `"a"` is stored with its quotes, as Confluent's JSON
///   serializer writes it);
/// - `application/vnd.kafka.text.v2+json` (Strimzi): plain strings, stored as UTF-8.
///
/// `headers` (Strimzi) is `[{"key":"name","value":"<base64>"}]`; `timestamp` is milliseconds since
/// the epoch. `null` key or value is a null field. The `{"records":[...]}` envelope is checked by
/// `ProduceParsing.recordItems`, the same as the native JSON produce.
enum RestProxyV2Produce {
    enum Format: String, Sendable {
        case binary, json, text
    }

    /// The embedded format a produce request's `Content-Type` names.
    static func format(contentType: String?) throws(RestProxyV2Failure) -> Format {
        let essence = MediaType(contentType).essence
        switch essence {
        case "application/vnd.kafka.binary.v2+json": return .binary
        case "application/vnd.kafka.json.v2+json", RestProxyV2.mediaType, MediaType.json: return .json
        case "application/vnd.kafka.text.v2+json": return .text
        case "application/vnd.kafka.avro.v2+json", "application/vnd.kafka.jsonschema.v2+json", "application/vnd.kafka.protobuf.v2+json":
            throw RestProxyV2Failure(.unsupportedMediaType(
                "'\(essence)' needs a schema registry, which Petrel does not have; send application/vnd.kafka.binary.v2+json, application/vnd.kafka.json.v2+json or application/vnd.kafka.text.v2+json"))
        default:
            throw RestProxyV2Failure(.unsupportedMediaType(
                "Content-Type '\(contentType ?? "")' is not a REST Proxy v2 produce type; send application/vnd.kafka.binary.v2+json, application/vnd.kafka.json.v2+json or application/vnd.kafka.text.v2+json"))
        }
    }

    /// The records of a produce body. `partition` is the path's partition (produce to a partition):
    /// it applies to every record, and a record naming another one is refused.
    static func records(body: [UInt8], format: Format, partition: PartitionID? = nil) throws(RestProxyV2Failure) -> [ProduceRecord] {
        let items: [JSONNode]
        do { items = try ProduceParsing.recordItems(body) } catch { throw RestProxyV2Failure(error) }
        var out: [ProduceRecord] = []
        out.reserveCapacity(items.count)
        for (i, item) in items.enumerated() {
            var record = try Self.record(item, body: body, format: format, context: "records[\(i)]")
            if let partition {
                if let own = record.partition, own != partition {
                    throw .conversion("records[\(i)].partition is \(own.rawValue) but the request produces to partition \(partition.rawValue)")
                }
                record.partition = partition
            }
            out.append(record)
        }
        return out
    }

    static func record(_ node: JSONNode, body: [UInt8], format: Format, context: String) throws(RestProxyV2Failure) -> ProduceRecord {
        guard let members = node.objectValue else { throw .conversion("\(context) must be a JSON object, got \(node.typeName)") }
        var record = ProduceRecord(value: nil)
        for (name, field) in members {
            switch name {
            case "key": record.key = try embedded(field, body: body, format: format, context: "\(context).key")
            case "value": record.value = try embedded(field, body: body, format: format, context: "\(context).value")
            case "partition":
                if field.isNull { continue }
                guard let p = field.int64Value, p >= 0, p <= Int64(Int32.max) else {
                    throw .conversion("\(context).partition must be a non-negative integer")
                }
                record.partition = PartitionID(Int32(p))
            case "timestamp":
                if field.isNull { continue }
                guard let t = field.int64Value, t >= 0 else {
                    throw .conversion("\(context).timestamp must be a non-negative integer (milliseconds since the epoch)")
                }
                record.timestamp = t
            case "headers": record.headers = try headers(field, context: "\(context).headers")
            default:
                throw .conversion("\(context) has an unknown field \"\(name)\"; a v2 record has key, value, partition, headers and timestamp")
            }
        }
        return record
    }

    /// A key or value as the format embeds it.
    static func embedded(_ node: JSONNode, body: [UInt8], format: Format, context: String) throws(RestProxyV2Failure) -> [UInt8]? {
        if node.isNull { return nil }
        switch format {
        case .json:
            return Array(body[node.range])
        case .text:
            guard let s = node.stringValue else { throw .conversion("\(context) must be a string in the text format, got \(node.typeName)") }
            return Array(s.utf8)
        case .binary:
            return try base64(node, context)
        }
    }

    /// Strimzi's `[{"key":"name","value":"<base64>"}]`.
    static func headers(_ node: JSONNode, context: String) throws(RestProxyV2Failure) -> [RecordHeader] {
        if node.isNull { return [] }
        guard let items = node.arrayValue else { throw .conversion("\(context) must be an array of {\"key\",\"value\"} with base64 values") }
        var out: [RecordHeader] = []
        for (i, item) in items.enumerated() {
            guard let key = item["key"]?.stringValue else { throw .conversion("\(context)[\(i)] needs a string \"key\"") }
            var value: [UInt8]?
            if let v = item["value"] { value = try base64(v, "\(context)[\(i)].value") }
            out.append(RecordHeader(key: key, value: value))
        }
        return out
    }

    /// The native API's base64 check, answered the v2 way (422, 42203: the JSON did not convert).
    static func base64(_ node: JSONNode, _ context: String) throws(RestProxyV2Failure) -> [UInt8]? {
        do { return try ProduceParsing.base64(node, context) } catch { throw .conversion(error.message) }
    }
}
