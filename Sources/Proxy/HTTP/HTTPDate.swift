/// HTTP dates (RFC 9110 §5.6.7): written as IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`),
/// read in all three forms a recipient must accept — IMF-fixdate, RFC 850
/// (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`).
///
/// Pure arithmetic on seconds since the Unix epoch (proleptic Gregorian, UTC); no `Foundation`,
/// no locale, no time zone database. Threading: none (values only).
public enum HTTPDate {
    private static let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// `seconds` (since 1970-01-01 00:00:00 UTC, not negative) as IMF-fixdate.
    public static func format(_ seconds: Int64) -> String {
        let s = max(seconds, 0)
        let dayNumber = s / 86400
        let secondOfDay = Int(s % 86400)
        let (year, month, day) = civil(fromDays: dayNumber)
        let weekday = Int((dayNumber + 4) % 7)  // 1970-01-01 was a Thursday
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(days[weekday]), \(two(day)) \(months[month - 1]) \(year) "
            + "\(two(secondOfDay / 3600)):\(two(secondOfDay / 60 % 60)):\(two(secondOfDay % 60)) GMT"
    }

    /// The seconds a date field value names, or nil when it is not a valid HTTP-date (the
    /// condition it carries is then ignored, RFC 9110 §13.1.3–4).
    public static func parse(_ bytes: ArraySlice<UInt8>) -> Int64? {
        let text = String(decoding: bytes, as: UTF8.self).trimmingSpacesAndTabs
        let parts = text.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        var day = 0, month = 0, year = 0, time = ""
        if parts.count == 6, parts[0].hasSuffix(","), parts[5] == "GMT" {
            // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
            guard let d = Int(parts[1]), let m = months.firstIndex(of: parts[2]), let y = Int(parts[3]), parts[3].count == 4 else { return nil }
            (day, month, year, time) = (d, m + 1, y, parts[4])
        } else if parts.count == 4, parts[0].hasSuffix(","), parts[3] == "GMT" {
            // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT (two-digit years: the 50-year rule, §5.6.7)
            let dmy = parts[1].split(separator: "-").map(String.init)
            guard dmy.count == 3, let d = Int(dmy[0]), let m = months.firstIndex(of: dmy[1]), let yy = Int(dmy[2]), dmy[2].count == 2 else { return nil }
            (day, month, year, time) = (d, m + 1, yy < 70 ? 2000 + yy : 1900 + yy, parts[2])
        } else if parts.count == 5, days.contains(parts[0]) {
            // asctime: Sun Nov  6 08:49:37 1994
            guard let m = months.firstIndex(of: parts[1]), let d = Int(parts[2]), let y = Int(parts[4]), parts[4].count == 4 else { return nil }
            (day, month, year, time) = (d, m + 1, y, parts[3])
        } else {
            return nil
        }
        let hms = time.split(separator: ":").map { Int($0) }
        guard hms.count == 3, let h = hms[0], let mi = hms[1], let se = hms[2], h < 24, mi < 60, se < 61,
              (1...31).contains(day), year >= 1970, year < 10000 else { return nil }
        return days(fromCivil: year, month, day) * 86400 + Int64(h * 3600 + mi * 60 + se)
    }

    /// Days since 1970-01-01 → (year, month 1–12, day 1–31); Howard Hinnant's civil algorithm.
    static func civil(fromDays z0: Int64) -> (Int, Int, Int) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (Int(yoe + era * 400 + (m <= 2 ? 1 : 0)), Int(m), Int(d))
    }

    /// (year, month, day) → days since 1970-01-01.
    static func days(fromCivil year: Int, _ month: Int, _ day: Int) -> Int64 {
        let y = Int64(month <= 2 ? year - 1 : year)
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = Int64(month > 2 ? month - 3 : month + 9)
        let doy = (153 * mp + 2) / 5 + Int64(day) - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }
}

extension StringProtocol {
    /// Without leading and trailing spaces and tabs (HTTP's optional whitespace).
    var trimmingSpacesAndTabs: String {
        var s = self[...]
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return String(s)
    }
}

extension HeadParser {
    /// The index just past the blank line that ends a head in `bytes`, looking from `from`
    /// (a caller that adds bytes as they arrive passes where the previous look stopped, less 3).
    static func endOfHead(in bytes: [UInt8], from: Int = 0) -> Int? {
        guard bytes.count >= 4 else { return nil }
        var i = max(3, from + 3)
        while i < bytes.count {
            if bytes[i] == 0x0A && bytes[i - 1] == 0x0D && bytes[i - 2] == 0x0A && bytes[i - 3] == 0x0D { return i + 1 }
            i += 1
        }
        return nil
    }
}
