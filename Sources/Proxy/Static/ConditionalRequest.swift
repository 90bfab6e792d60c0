/// What a `GET` or `HEAD` of a static file gets, from its validators and the request's
/// conditional and range fields, in RFC 9110's order (§13.2.2): `If-Match`, else
/// `If-Unmodified-Since` (412); `If-None-Match`, else `If-Modified-Since` (304); then `Range`,
/// gated by `If-Range` (206 or 416).
///
/// A value: built from the request head, evaluated with no I/O (tested directly).
/// Choices: one byte range is served (a request for several gets the whole file, as a server
/// may ignore `Range`); an `If-Modified-Since` or `If-Range` that is not a valid HTTP-date is
/// ignored.
struct ConditionalRequest: Equatable {
    /// A file's validators: its size, modification time and entity tag.
    struct Validators: Equatable {
        var size: UInt64
        var modifiedS: Int64
        /// A strong tag, quoted: `"<size hex>-<mtime ns hex>"` (`tag(size:modifiedNs:)`).
        var etag: String

        init(size: UInt64, modifiedS: Int64, modifiedNs: Int64) {
            self.size = size
            self.modifiedS = modifiedS
            etag = Self.tag(size: size, modifiedNs: modifiedNs)
        }

        /// Changes when the file's size or modification time does (nginx's tag, with nanoseconds).
        static func tag(size: UInt64, modifiedNs: Int64) -> String {
            "\"\(String(size, radix: 16))-\(String(UInt64(bitPattern: modifiedNs), radix: 16))\""
        }
    }

    enum Outcome: Equatable {
        case full
        /// Bytes `first...last` of the file.
        case partial(first: UInt64, last: UInt64)
        case notModified
        case preconditionFailed
        /// `Content-Range: bytes */size`.
        case rangeNotSatisfiable
    }

    var isGET = true
    var ifMatch: String?
    var ifNoneMatch: String?
    var ifModifiedSince: String?
    var ifUnmodifiedSince: String?
    var range: String?
    var ifRange: String?

    init(isGET: Bool = true, ifMatch: String? = nil, ifNoneMatch: String? = nil, ifModifiedSince: String? = nil,
         ifUnmodifiedSince: String? = nil, range: String? = nil, ifRange: String? = nil) {
        self.isGET = isGET
        self.ifMatch = ifMatch
        self.ifNoneMatch = ifNoneMatch
        self.ifModifiedSince = ifModifiedSince
        self.ifUnmodifiedSince = ifUnmodifiedSince
        self.range = range
        self.ifRange = ifRange
    }

    /// The fields of `head` (the first of each name counts).
    init(_ head: RequestHead) {
        isGET = head.bytes.equals(head.method, "GET")
        ifMatch = head.value(of: "if-match")
        ifNoneMatch = head.value(of: "if-none-match")
        ifModifiedSince = head.value(of: "if-modified-since")
        ifUnmodifiedSince = head.value(of: "if-unmodified-since")
        range = head.value(of: "range")
        ifRange = head.value(of: "if-range")
    }

    func evaluate(_ file: Validators) -> Outcome {
        if let ifMatch {
            if !Self.matches(ifMatch, file.etag, weak: false) { return .preconditionFailed }
        } else if let ifUnmodifiedSince, let date = HTTPDate.parse(Array(ifUnmodifiedSince.utf8)[...]), file.modifiedS > date {
            return .preconditionFailed
        }
        if let ifNoneMatch {
            if Self.matches(ifNoneMatch, file.etag, weak: true) { return .notModified }
        } else if let ifModifiedSince, let date = HTTPDate.parse(Array(ifModifiedSince.utf8)[...]), file.modifiedS <= date {
            return .notModified
        }
        guard isGET, let range else { return .full }
        if let ifRange {
            // A strong tag equal to the file's, or the exact modification date: the range
            // applies; anything else: the whole file (it changed, or the validator is weak).
            let trimmed = ifRange.trimmingSpacesAndTabs
            let holds = trimmed.hasPrefix("\"") ? trimmed == file.etag
                : HTTPDate.parse(Array(trimmed.utf8)[...]).map { $0 == file.modifiedS } ?? false
            if !holds { return .full }
        }
        return Self.byteRange(range, size: file.size)
    }

    /// A `Range` value against a file of `size` bytes: one satisfiable range → `.partial`;
    /// several, or another unit, or a malformed value → `.full` (ignored); none satisfiable → 416.
    static func byteRange(_ value: String, size: UInt64) -> Outcome {
        let text = value.trimmingSpacesAndTabs
        guard text.lowercased().hasPrefix("bytes=") else { return .full }
        let specs = text.dropFirst(6).split(separator: ",", omittingEmptySubsequences: false).map { String($0).trimmingSpacesAndTabs }
        guard specs.count == 1, let spec = specs.first, let dash = spec.firstIndex(of: "-") else { return .full }
        let firstText = spec[..<dash], lastText = spec[spec.index(after: dash)...]
        func number(_ s: Substring) -> UInt64? {
            guard !s.isEmpty, s.count <= 19, s.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
            return UInt64(s)
        }
        if firstText.isEmpty {
            // Suffix: the last N bytes.
            guard let n = number(lastText) else { return .full }
            guard n > 0, size > 0 else { return .rangeNotSatisfiable }
            return .partial(first: size - min(n, size), last: size - 1)
        }
        guard let first = number(firstText) else { return .full }
        let last: UInt64
        if lastText.isEmpty {
            last = size &- 1
        } else {
            guard let l = number(lastText), l >= first else { return .full }
            last = min(l, size &- 1)
        }
        guard first < size else { return .rangeNotSatisfiable }
        return .partial(first: first, last: last)
    }

    /// Whether an `If-Match` / `If-None-Match` list names `etag` (`*` names any). The weak
    /// comparison ignores `W/`; the strong one refuses weak tags on either side.
    static func matches(_ list: String, _ etag: String, weak: Bool) -> Bool {
        let trimmed = list.trimmingSpacesAndTabs
        if trimmed == "*" { return true }
        var rest = Substring(trimmed)
        while !rest.isEmpty {
            while let c = rest.first, c == " " || c == "\t" || c == "," { rest = rest.dropFirst() }
            var isWeak = false
            if rest.hasPrefix("W/") { isWeak = true; rest = rest.dropFirst(2) }
            guard rest.first == "\"", let close = rest.dropFirst().firstIndex(of: "\"") else { return false }
            let tag = rest[...close]
            if String(tag) == etag && (weak || !isWeak) { return true }
            rest = rest[rest.index(after: close)...]
        }
        return false
    }
}
