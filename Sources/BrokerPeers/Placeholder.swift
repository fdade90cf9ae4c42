// Placeholder: HTTPPeerTransport arrives here.
