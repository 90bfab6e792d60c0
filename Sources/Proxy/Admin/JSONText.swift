/// Writing JSON text for admin endpoints and logs.
public enum JSONText {
    /// A JSON string literal: quotes, backslashes and control characters escaped.
    public static func quote(_ s: String) -> String {
        "\"" + s.escaped { u in
            switch u {
            case "\"": "\\\""
            case "\\": "\\\\"
            case "\n": "\\n"
            case "\r": "\\r"
            case "\t": "\\t"
            case _ where u.value < 0x20 || u.value == 0x7F:
                "\\u00" + (u.value < 0x10 ? "0" : "") + String(u.value, radix: 16)
            default: nil
            }
        } + "\""
    }
}

extension String {
    /// The text with each scalar for which `replacement` returns a string replaced by it: the one
    /// loop behind JSON strings, Prometheus label values and HTML text.
    func escaped(_ replacement: (Unicode.Scalar) -> String?) -> String {
        var out = ""
        out.reserveCapacity(utf8.count)
        for u in unicodeScalars {
            if let r = replacement(u) { out += r } else { out.unicodeScalars.append(u) }
        }
        return out
    }
}
