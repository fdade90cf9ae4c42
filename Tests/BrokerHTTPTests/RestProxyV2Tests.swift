import BrokerModel
@testable import BrokerRuntime
import Testing
@testable import BrokerHTTP

/// The REST Proxy v2 dialect's pure parts: media types, produce bodies, renderings.
@Suite struct RestProxyV2Tests {
    func parse(_ body: String, _ format: RestProxyV2Produce.Format, partition: PartitionID? = nil) throws(RestProxyV2Failure) -> [ProduceRecord] {
        try RestProxyV2Produce.records(body: Array(body.utf8), format: format, partition: partition)
    }

    func failure(_ body: String, _ format: RestProxyV2Produce.Format, partition: PartitionID? = nil) -> RestProxyV2Failure? {
        do {
            _ = try parse(body, format, partition: partition)
            return nil
        } catch {
            return error
        }
    }

    // MARK: media types

    @Test func mediaTypesSelectTheEmbeddedFormat() throws {
        #expect(try RestProxyV2Produce.format(contentType: "application/vnd.kafka.binary.v2+json") == .binary)
        #expect(try RestProxyV2Produce.format(contentType: "application/vnd.kafka.json.v2+json") == .json)
        #expect(try RestProxyV2Produce.format(contentType: "application/vnd.kafka.text.v2+json") == .text)
        #expect(try RestProxyV2Produce.format(contentType: "Application/Vnd.Kafka.Binary.V2+JSON; charset=utf-8") == .binary)
        #expect(try RestProxyV2Produce.format(contentType: "application/json") == .json)
    }

    @Test func schemaRegistryFormatsAreA415SayingSo() {
        for type in ["application/vnd.kafka.avro.v2+json", "application/vnd.kafka.jsonschema.v2+json", "application/vnd.kafka.protobuf.v2+json"] {
            #expect(throws: RestProxyV2Failure.self) { try RestProxyV2Produce.format(contentType: type) }
            do {
                _ = try RestProxyV2Produce.format(contentType: type)
            } catch {
                #expect(error.status == 415 && error.errorCode == 41501)
                #expect(error.message.contains("schema registry"))
            }
        }
    }

    @Test func otherMediaTypesAre415() {
        for type in [nil, "text/plain", "application/x-www-form-urlencoded", "application/vnd.kafka.binary.v1+json"] as [String?] {
            do {
                _ = try RestProxyV2Produce.format(contentType: type)
                Issue.record("\(type ?? "no type") was accepted")
            } catch {
                #expect(error.status == 415 && error.errorCode == 41501)
            }
        }
    }

    // MARK: produce bodies

    @Test func binaryKeysAndValuesAreBase64() throws {
        let records = try parse(#"{"records":[{"key":"a2V5","value":"S2Fma2E="},{"value":null},{"key":null,"value":"AAEC","partition":1}]}"#, .binary)
        #expect(records == [
            ProduceRecord(key: Array("key".utf8), value: Array("Kafka".utf8)),
            ProduceRecord(value: nil),
            ProduceRecord(partition: PartitionID(1), key: nil, value: [0, 1, 2]),
        ])
    }

    @Test func jsonValuesAreStoredAsTheirJSONText() throws {
        let records = try parse(#"{"records":[{"key":"somekey","value":{"foo": "bar"}},{"value":["foo","bar"]},{"value":53.5},{"value":"s"},{"value":null}]}"#, .json)
        #expect(records.map(\.key) == [Array(#""somekey""#.utf8), nil, nil, nil, nil])
        #expect(records.map(\.value) == [Array(#"{"foo": "bar"}"#.utf8), Array(#"["foo","bar"]"#.utf8), Array("53.5".utf8), Array(#""s""#.utf8), nil])
    }

    @Test func textValuesArePlainStrings() throws {
        let records = try parse(#"{"records":[{"key":"k","value":"hello \u00e9"}]}"#, .text)
        #expect(records == [ProduceRecord(key: Array("k".utf8), value: Array("hello é".utf8))])
        let f = failure(#"{"records":[{"value":5}]}"#, .text)
        #expect(f?.status == 422 && f?.errorCode == 42203)
    }

    @Test func strimziHeadersAndTimestamps() throws {
        let records = try parse(#"{"records":[{"value":"v","headers":[{"key":"trace","value":"YWJj"},{"key":"empty","value":null}],"timestamp":1700000000000}]}"#, .text)
        #expect(records == [ProduceRecord(value: Array("v".utf8),
                                          headers: [RecordHeader(key: "trace", value: Array("abc".utf8)), RecordHeader(key: "empty", value: nil)],
                                          timestamp: 1_700_000_000_000)])
    }

    @Test func badBase64Is42203() {
        for body in [#"{"records":[{"value":"not base64!"}]}"#, #"{"records":[{"key":"*","value":"AAEC"}]}"#, #"{"records":[{"value":5}]}"#] {
            let f = failure(body, .binary)
            #expect(f?.status == 422 && f?.errorCode == 42203, "\(body)")
        }
        let header = failure(#"{"records":[{"value":"v","headers":[{"key":"h","value":"%%"}]}]}"#, .text)
        #expect(header?.errorCode == 42203)
    }

    @Test func badShapesAreRefused() {
        // The envelope: the native API's checks (400).
        for body in [#"{"records":["#, "[]", #"{"records":[]}"#, #"{"records":{}}"#, #"{"values":[]}"#] {
            let f = failure(body, .json)
            #expect(f?.status == 400 && f?.errorCode == 40001, "\(body)")
        }
        // A record that does not convert (422 42203).
        for body in [#"{"records":[5]}"#, #"{"records":[{"value":1,"vaule":2}]}"#, #"{"records":[{"value":1,"partition":-1}]}"#,
                     #"{"records":[{"value":1,"partition":"0"}]}"#, #"{"records":[{"value":1,"timestamp":-5}]}"#,
                     #"{"records":[{"value":1,"headers":{"h":"aGk="}}]}"#] {
            let f = failure(body, .json)
            #expect(f?.status == 422 && f?.errorCode == 42203, "\(body)")
        }
    }

    @Test func producingToAPartitionPinsEveryRecord() throws {
        let records = try parse(#"{"records":[{"value":1},{"value":2,"partition":3}]}"#, .json, partition: PartitionID(3))
        #expect(records.map(\.partition) == [PartitionID(3), PartitionID(3)])
        let f = failure(#"{"records":[{"value":1,"partition":0}]}"#, .json, partition: PartitionID(3))
        #expect(f?.errorCode == 42203)
    }

    // MARK: renderings

    @Test func produceAnswerHasOneEntryPerRecord() {
        let written = RecordPlacement(partition: PartitionID(0), offset: Offset(7), timestamp: 1)
        let body = RenderV2.produce([
            .written(written),
            .failed(partition: PartitionID(9), error: .unknownPartition(topic: "t", partition: 9, partitionCount: 2)),
        ])
        let text = String(decoding: body, as: UTF8.self)
        #expect(text.hasPrefix(#"{"key_schema_id":null,"value_schema_id":null,"offsets":[{"partition":0,"offset":7,"error_code":null,"error":null},{"partition":9,"offset":null,"error_code":40402,"error":"#))
        #expect((try? JSONParser.parse(body)) != nil)
    }

    @Test func partitionShowsReplicasWithLeaderAndInSync() {
        let p = PartitionDescription(partition: PartitionID(1), leader: NodeID(2), replicas: [NodeID(2), NodeID(3)], inSyncReplicas: [NodeID(2)],
                                     offsets: PartitionOffsets(logStartOffset: Offset(0), highWatermark: Offset(5), logEndOffset: Offset(6)),
                                     sizeBytes: 0, segmentCount: 1)
        var w = JSONWriter()
        RenderV2.partition(p, into: &w)
        #expect(String(decoding: w.bytes, as: UTF8.self)
            == #"{"partition":1,"leader":2,"replicas":[{"broker":2,"leader":true,"in_sync":true},{"broker":3,"leader":false,"in_sync":false}]}"#)
        #expect(String(decoding: RenderV2.offsets(p.offsets), as: UTF8.self) == #"{"beginning_offset":0,"end_offset":5}"#)
        #expect(String(decoding: RenderV2.brokers([NodeID(1), NodeID(2)]), as: UTF8.self) == #"{"brokers":[1,2]}"#)
    }

    @Test func answersAreTheVendorTypeUnlessPlainJSONIsAsked() {
        #expect(RestProxyV2.responseContentType(accept: nil) == "application/vnd.kafka.v2+json")
        #expect(RestProxyV2.responseContentType(accept: "*/*") == "application/vnd.kafka.v2+json")
        #expect(RestProxyV2.responseContentType(accept: "application/vnd.kafka.v2+json, application/vnd.kafka+json, application/json") == "application/vnd.kafka.v2+json")
        #expect(RestProxyV2.responseContentType(accept: "application/json") == "application/json")
    }
}
