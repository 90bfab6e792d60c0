/// "Did you mean …?" hints for misspelt names: config keys and command-line flags share this, so
/// both kinds of typo are caught by the same rule.
enum Suggestion {
    /// The candidate closest to `input`, if it is close enough to be a plausible typo.
    ///
    /// Comparison ignores case (`healthCheck` → `health_check` is one edit). "Close enough" scales
    /// with the candidate's length, up to a third of it: `interval` still finds `interval_ms`, while
    /// short names only match near-exact typos (`urls` → `url`, but nothing for `port`). Ties go to the
    /// earlier candidate, so callers list names in their documented order.
    static func closest(to input: String, among candidates: some Sequence<String>) -> String? {
        var best: (name: String, distance: Int)?
        for candidate in candidates {
            let distance = editDistance(input.lowercased(), candidate.lowercased())
            guard distance <= max(1, candidate.count / 3) else { continue }
            if let best, best.distance <= distance { continue }
            best = (candidate, distance)
        }
        return best?.name
    }

    /// `did you mean "health_check"?`: one wording for every caller.
    static func didYouMean(_ match: String) -> String {
        "did you mean \"\(match)\"?"
    }

    /// Optimal string alignment distance: insertions, deletions, substitutions and transpositions of
    /// adjacent characters each cost one. Transpositions count once because swapped letters
    /// (`lsiten`) are the most common typo.
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        // Three rolling rows: the one before last is needed for transpositions.
        var previous2 = [Int](repeating: 0, count: b.count + 1)
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    current[j] = min(current[j], previous2[j - 2] + 1)
                }
            }
            (previous2, previous, current) = (previous, current, previous2)
        }
        return previous[b.count]
    }
}
