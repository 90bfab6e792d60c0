/// The runtime API on the admin paths (`admin.api_path`, `/_admin` by default), for operators
/// and deploy scripts — served where metrics are: on `admin.listen`, or to loopback clients of
/// the main listener:
///
///   POST /_admin/backends/{id}/drain     no new requests (sticky sessions still come), in-flight finish
///   POST /_admin/backends/{id}/disable   no requests at all; in-flight finish
///   POST /_admin/backends/{id}/enable    back in rotation
///   PUT  /_admin/backends/{id}/weight/N  (or …/weight?value=N) the weight, 1–1000
///
/// Answers JSON with the backend's state. Changes last until the next reload (or restart), are
/// shared by every worker at once (state) or within a second (weights, on each worker's sweep),
/// and are logged. Threading: called on a worker's loop; the state lives in `SharedBackend`.
enum RuntimeAPI {
    static func answer(_ rest: String, method: String, upstreams: [Upstream]) -> LocalReply {
        // rest: /backends/{id}/{action}[/{value}][?value=N]
        var path = Substring(rest)
        var query: Substring = ""
        if let q = path.firstIndex(of: "?") { query = path[path.index(after: q)...]; path = path[..<q] }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count >= 4, parts[0].isEmpty, parts[1] == "backends" else {
            return json(404, #"{"error":"unknown admin path; use /backends/{id}/drain|disable|enable (POST) or /backends/{id}/weight/N (PUT)"}"#)
        }
        let id = String(parts[2]).removingPercentEscapes
        let action = parts[3]
        // An endpoint by its name, or every endpoint of a backend given by host name by the
        // backend's id.
        var targets: [SharedBackend] = []
        var wholeBackend = true
        for b in upstreams.lazy.flatMap(\.backends) where !targets.contains(where: { $0 === b.shared }) {
            // `ID@ADDRESS` names one endpoint, also while the name has only that address (when
            // the endpoint is named `ID`), so scripts need not know how many addresses there are.
            if (b.id == id && b.id != b.shared.backendID)
                || (b.shared.nameRecord != nil && id == "\(b.shared.backendID)@\(b.shared.address.ipString)") {
                targets = [b.shared]; wholeBackend = false; break
            }
            if b.shared.backendID == id { targets.append(b.shared) }
        }
        // Set for the backend as a whole: addresses its name gains later start with it too.
        let record = wholeBackend ? targets.first?.nameRecord : nil
        guard !targets.isEmpty else {
            return json(404, #"{"error":"no backend with id \#(JSONText.quote(id).dropFirst().dropLast())"}"#)
        }
        switch (method, action, parts.count) {
        case ("POST", "drain", 4): targets.forEach { $0.setAdminState(.draining) }; record?.setBackendRuntimeChanges(state: .draining)
        case ("POST", "disable", 4): targets.forEach { $0.setAdminState(.disabled) }; record?.setBackendRuntimeChanges(state: .disabled)
        case ("POST", "enable", 4): targets.forEach { $0.setAdminState(.enabled) }; record?.setBackendRuntimeChanges(state: .enabled)
        case ("PUT", "weight", 4), ("PUT", "weight", 5):
            let text = parts.count == 5 ? parts[4] : query.split(separator: "&").first { $0.hasPrefix("value=") }.map { $0.dropFirst(6) } ?? ""
            guard let weight = Int(text), (1...BalanceConfig.maxWeight).contains(weight) else {
                return json(400, #"{"error":"the weight is a whole number from 1 to \#(BalanceConfig.maxWeight): PUT …/weight/N or …/weight?value=N"}"#)
            }
            targets.forEach { $0.setWeight(weight) }
            record?.setBackendRuntimeChanges(weight: weight)
        default:
            return json(405, #"{"error":"use POST …/drain, …/disable, …/enable or PUT …/weight/N"}"#)
        }
        let shared = targets[0]
        let names = targets.map(\.id).joined(separator: ", ")
        Log.info("admin: backend \(names) \(action == "weight" ? "weight \(shared.effectiveWeight)" : String(action)) (until the next reload)")
        return json(200, "{\"id\":\(JSONText.quote(id)),\"state\":\"\(shared.adminState)\",\"weight\":\(shared.effectiveWeight)"
            + (targets.count > 1 || targets[0].id != id ? ",\"endpoints\":[\(targets.map { JSONText.quote($0.id) }.joined(separator: ","))]" : "") + "}")
    }

    private static func json(_ status: UInt16, _ body: String) -> LocalReply {
        LocalReply(status: status, contentType: "application/json", body: Array((body + "\n").utf8))
    }
}

extension String {
    /// `%XX` decoded (ids in a URL path); malformed escapes are kept as they are.
    fileprivate var removingPercentEscapes: String {
        var out: [UInt8] = []
        let b = Array(utf8)
        var i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "%"), i + 2 < b.count, let v = UInt8(String(decoding: b[(i + 1)...(i + 2)], as: UTF8.self), radix: 16) {
                out.append(v); i += 3
            } else {
                out.append(b[i]); i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
