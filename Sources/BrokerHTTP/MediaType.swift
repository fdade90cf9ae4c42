/// A parsed `Content-Type` / `Accept` entry: lower-cased `type/subtype` without parameters.
struct MediaType: Equatable {
    var essence: String

    init(_ header: String?) {
        let raw = header ?? ""
        let essence = raw.split(separator: ";", maxSplits: 1).first.map(String.init) ?? ""
        self.essence = essence.trimmingSpaces().lowercased()
    }

    static let json = "application/json"
    static let ndjson = "application/x-ndjson"
    static let text = "text/plain"
    static let octetStream = "application/octet-stream"
    /// What `curl -d` sends when no type is given; its body is taken as the raw record value.
    static let form = "application/x-www-form-urlencoded"
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}
