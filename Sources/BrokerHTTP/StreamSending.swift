import MicroHTTP

extension ResponseStream {
    /// Writes `bytes`, then runs `next`. When this one answer is larger than the free buffer (JSON
    /// expands bytes), it waits for the client to take everything first; `tooLarge` runs when it is
    /// larger than the whole buffer. Nothing runs if the client is gone.
    func send(_ bytes: [UInt8], then next: @escaping @Sendable () -> Void, tooLarge: @escaping @Sendable () -> Void) {
        switch write(bytes) {
        case .accepted: next()
        case .closed: return
        case .bufferFull:
            whenDrained(below: 0) { [self] in
                switch write(bytes) {
                case .accepted: next()
                case .closed: return
                case .bufferFull: tooLarge()
                }
            }
        }
    }
}
