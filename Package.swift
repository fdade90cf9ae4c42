// swift-tools-version:6.0
// Petrel: a Kafka-class event broker whose whole interface is HTTP.
// Imports flow one way (ArchitectureTests checks it):
//   BrokerModel <- Consensus, LogStorage, ClusterState <- BrokerRuntime <- BrokerHTTP <- petrel
//   BrokerRuntime, MicroHTTP, CCurl <- BrokerPeers (the HTTP peer transport) <- petrel
//   CMicroHTTPD, WebSocketCodec <- MicroHTTP <- BrokerHTTP
//   CCurl <- BrokerClient <- petrel (CLI)
//   BrokerTesting (simulation support) <- tests and petrel-raft-sim only
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
]

let package = Package(
    name: "Petrel",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "petrel", targets: ["petrel"]),
        .executable(name: "petrel-raft-sim", targets: ["petrel-raft-sim"]),
        .executable(name: "petrel-bench", targets: ["petrel-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        .target(name: "CCRC32C"),
        .target(name: "BrokerModel", dependencies: ["CCRC32C"], swiftSettings: swiftSettings),
        .target(name: "Consensus", dependencies: ["BrokerModel"], swiftSettings: swiftSettings),
        .target(name: "LogStorage", dependencies: ["BrokerModel"], swiftSettings: swiftSettings),
        .target(name: "ClusterState", dependencies: ["BrokerModel"], swiftSettings: swiftSettings),
        .target(
            name: "CMicroHTTPD",
            // nettle (SHA-1 for the WebSocket handshake) is already a dependency of libmicrohttpd's TLS stack.
            linkerSettings: [.linkedLibrary("microhttpd"), .linkedLibrary("nettle")]
        ),
        .target(name: "WebSocketCodec", swiftSettings: swiftSettings),
        .target(name: "CCurl", linkerSettings: [.linkedLibrary("curl")]),
        .target(name: "BrokerClient", dependencies: ["CCurl"], swiftSettings: swiftSettings),
        .target(name: "MicroHTTP", dependencies: ["CMicroHTTPD", "WebSocketCodec"], swiftSettings: swiftSettings),
        .target(
            name: "BrokerRuntime",
            dependencies: ["BrokerModel", "LogStorage", "Consensus", "ClusterState", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "BrokerPeers",
            dependencies: ["BrokerModel", "BrokerRuntime", "MicroHTTP", "CCurl", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "BrokerHTTP",
            dependencies: ["BrokerModel", "BrokerRuntime", "MicroHTTP", "WebSocketCodec", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "BrokerTesting",
            dependencies: ["BrokerModel", "Consensus", "LogStorage"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "petrel",
            dependencies: [
                "BrokerModel", "BrokerRuntime", "BrokerHTTP", "BrokerPeers", "MicroHTTP", "BrokerClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "petrel-raft-sim",
            dependencies: ["BrokerTesting", "Consensus", "BrokerModel"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "petrel-bench",
            dependencies: ["CMicroHTTPD", "WebSocketCodec", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "BrokerModelTests", dependencies: ["BrokerModel"], swiftSettings: swiftSettings),
        .testTarget(name: "ConsensusTests", dependencies: ["Consensus", "BrokerTesting", "BrokerModel"], resources: [.copy("Scenarios")], swiftSettings: swiftSettings),
        .testTarget(name: "ClusterStateTests", dependencies: ["ClusterState", "BrokerModel"], resources: [.copy("Scenarios")], swiftSettings: swiftSettings),
        .testTarget(name: "LogStorageTests", dependencies: ["LogStorage", "BrokerTesting", "BrokerModel"], swiftSettings: swiftSettings),
        .testTarget(name: "BrokerClientTests", dependencies: ["BrokerClient", "MicroHTTP"], swiftSettings: swiftSettings),
        .testTarget(name: "WebSocketCodecTests", dependencies: ["WebSocketCodec"], swiftSettings: swiftSettings),
        .testTarget(name: "MicroHTTPTests", dependencies: ["MicroHTTP", "WebSocketCodec"], swiftSettings: swiftSettings),
        .testTarget(name: "BrokerRuntimeTests", dependencies: ["BrokerRuntime", "BrokerTesting", "LogStorage", "BrokerModel", "Consensus", "ClusterState"], swiftSettings: swiftSettings),
        .testTarget(name: "BrokerHTTPTests", dependencies: ["BrokerHTTP", "BrokerRuntime", "MicroHTTP", "BrokerModel", "WebSocketCodec"], swiftSettings: swiftSettings),
        .testTarget(name: "BrokerPeersTests", dependencies: ["BrokerPeers", "BrokerRuntime", "BrokerModel"], swiftSettings: swiftSettings),
        .testTarget(name: "ArchitectureTests", swiftSettings: swiftSettings),
    ]
)
