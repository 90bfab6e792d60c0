import Testing
@testable import Proxy

/// The strict JSON reader behind the config file: RFC 8259 grammar, escapes, limits, and errors that
/// point at the right line and column.
@Suite struct JSONValueTests {
    private func parse(_ text: String) throws(JSONSyntaxError) -> JSONValue {
        try JSONValue.parse(Array(text.utf8))
    }

    /// The syntax error for `text`, or `nil` (failing the test) when it parses.
    private func syntaxError(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) -> JSONSyntaxError? {
        do {
            let value = try parse(text)
            Issue.record("expected a syntax error, parsed \(value)", sourceLocation: sourceLocation)
            return nil
        } catch {
            return error
        }
    }

    @Test("Scalars and containers parse, keeping object key order")
    func scalarsAndContainersParse() throws {
        let value = try parse(#" { "z": [1, -2.5e3, true, false, null], "a": {}, "m": [] } "#)
        #expect(value == .object([
            ("z", .array([.number("1"), .number("-2.5e3"), .bool(true), .bool(false), .null])),
            ("a", .object([])),
            ("m", .array([])),
        ]))
        #expect(try parse("\"x\"") == .string("x"))
        #expect(try parse("0") == .number("0"))
    }

    @Test("Numbers keep their literal text, and integers read exactly")
    func numbersKeepTheirLiteralText() throws {
        #expect(try parse("5000").integerValue == 5000)
        #expect(try parse("-0").integerValue == 0)
        #expect(try parse("9007199254740993").integerValue == 9_007_199_254_740_993)
        #expect(try parse("2.5").integerValue == nil)
        #expect(try parse("1e3").integerValue == nil)
        #expect(try parse("99999999999999999999").integerValue == nil)
        #expect(try parse("2.5").doubleValue == 2.5)
        #expect(try parse("1E2").doubleValue == 100)
        #expect(try parse("\"1\"").integerValue == nil)
        #expect(try parse("1.0") != parse("1"))
        #expect(try parse("99999999999999999999").isIntegerLiteral)
        #expect(try !parse("5.0").isIntegerLiteral)
        #expect(try !parse("\"5\"").isIntegerLiteral)
    }

    @Test("Escapes decode, including surrogate pairs")
    func escapesDecode() throws {
        #expect(try parse(#""\" \\ \/ \b \f \n \r \t""#) == .string("\" \\ / \u{8} \u{C} \n \r \t"))
        #expect(try parse(#""caf\u00e9 \u00E9""#) == .string("café é"))
        #expect(try parse(#""\ud83d\ude00""#) == .string("😀"))
        #expect(try parse(#""\u0000""#) == .string("\u{0}"))
        #expect(try parse("\"naïve ✓\"") == .string("naïve ✓"))
    }

    @Test("Unpaired surrogates are rejected", arguments: [
        #""\ud83d""#, #""\ud83d x""#, #""\ud83d\u0041""#, #""\ude00""#,
    ])
    func unpairedSurrogatesAreRejected(text: String) {
        #expect(syntaxError(text)?.message.contains("unpaired surrogate") == true)
    }

    @Test("Bad escapes are rejected with the escape named")
    func badEscapesAreRejected() {
        #expect(syntaxError(#""\x""#)?.message.contains("invalid escape '\\x'") == true)
        #expect(syntaxError(#""\u12""#)?.message.contains("four hex digits") == true)
        #expect(syntaxError(#""\u12G4""#)?.message.contains("four hex digits") == true)
    }

    @Test("Raw control characters and line breaks inside strings are rejected")
    func controlCharactersInStringsAreRejected() {
        #expect(syntaxError("\"a\tb\"")?.message.contains("control character U+0009") == true)
        let lineBreak = syntaxError("\"abc\ndef\"")
        #expect(lineBreak?.message.contains("line break inside a string") == true)
        #expect(lineBreak?.line == 1 && lineBreak?.column == 5)
        #expect(syntaxError("\"abc")?.message.contains("unterminated string") == true)
    }

    @Test("Invalid UTF-8 in a string is rejected")
    func invalidUTF8IsRejected() {
        do {
            _ = try JSONValue.parse([UInt8(ascii: "\""), 0xC3, 0x28, UInt8(ascii: "\"")])
            Issue.record("expected an error")
        } catch {
            #expect(error.message.contains("not valid UTF-8"))
        }
    }

    @Test("Errors report line and column, counting characters rather than bytes")
    func errorsReportLineAndColumn() {
        let error = syntaxError("{\n  \"a\": 1\n  \"b\": 2\n}")
        #expect(error?.line == 3)
        #expect(error?.column == 3)
        #expect(error?.message == "expected ',' or '}' after object member, found '\"'")
        #expect(error?.description == "3:3: expected ',' or '}' after object member, found '\"'")

        let afterAccent = syntaxError("{\"café\": 1 x}")
        #expect(afterAccent?.line == 1 && afterAccent?.column == 12)
        #expect(afterAccent?.message.hasSuffix("found 'x'") == true)
    }

    @Test("A byte order mark is skipped and not counted as a column")
    func byteOrderMarkIsSkipped() throws {
        #expect(try JSONValue.parse([0xEF, 0xBB, 0xBF] + Array("[1]".utf8)) == .array([.number("1")]))
        do {
            _ = try JSONValue.parse([0xEF, 0xBB, 0xBF] + Array("[1 2]".utf8))
            Issue.record("expected an error")
        } catch {
            #expect(error.column == 4)
        }
    }

    @Test("Duplicate keys are an error pointing at both places")
    func duplicateKeysAreAnError() {
        let error = syntaxError("{\n  \"id\": \"a\",\n  \"id\": \"b\"\n}")
        #expect(error?.line == 3 && error?.column == 3)
        #expect(error?.message == "duplicate key \"id\" (first defined at line 2, column 3)")
    }

    @Test("The same key in different objects is fine")
    func sameKeyInDifferentObjectsIsFine() throws {
        #expect(throws: Never.self) { try parse(#"[{"id": 1}, {"id": 2}]"#) }
    }

    @Test("Trailing commas are rejected, pointing at the comma")
    func trailingCommasAreRejected() {
        let object = syntaxError("{\"a\": 1, }")
        #expect(object?.message == "trailing comma before '}' is not allowed in JSON")
        #expect(object?.column == 8)
        let array = syntaxError("[1,\n]")
        #expect(array?.message == "trailing comma before ']' is not allowed in JSON")
        #expect(array?.line == 1 && array?.column == 3)
    }

    @Test("Common non-JSON habits get specific messages", arguments: [
        ("// note\n{}", "comments are not allowed"),
        ("{'a': 1}", "object keys must be strings in double quotes"),
        ("{a: 1}", "object keys must be strings in double quotes"),
        ("['a']", "strings must use double quotes"),
        ("True", "unexpected 'True'"),
        ("[undefined]", "unexpected 'undefined'"),
        ("NaN", "unexpected 'NaN'"),
        ("nul", "unexpected 'nul'"),
        ("{\"a\" 1}", "expected ':' after object key, found '1'"),
        ("[1 2]", "expected ',' or ']' after array element, found '2'"),
        ("{\"a\": }", "expected a value, found '}'"),
        ("[", "expected a value, found end of file"),
        ("{\"a\": 1", "expected ',' or '}' after object member, found end of file"),
        ("{} {}", "unexpected '{' after the end of the JSON value"),
        ("", "expected a JSON value, found end of file"),
        ("   ", "expected a JSON value, found end of file"),
    ])
    func commonMistakesGetSpecificMessages(text: String, expected: String) {
        #expect(syntaxError(text)?.message.contains(expected) == true, "\(text)")
    }

    @Test("Numbers outside the JSON grammar are rejected", arguments: [
        ("01", "leading zeros"),
        ("-01", "leading zeros"),
        ("1.", "expected a digit after the decimal point"),
        ("1.e5", "expected a digit after the decimal point"),
        ("-", "expected a digit after '-'"),
        ("-a", "expected a digit after '-'"),
        ("1e", "expected a digit in the exponent"),
        ("1e+", "expected a digit in the exponent"),
        ("+1", "cannot start with '+'"),
        (".5", "digit before the decimal point"),
    ])
    func malformedNumbersAreRejected(text: String, expected: String) {
        #expect(syntaxError(text)?.message.contains(expected) == true, "\(text)")
    }

    @Test("Nesting is capped so a hostile file cannot exhaust the stack")
    func nestingIsCapped() throws {
        let deepest = JSONValue.maxDepth
        #expect(throws: Never.self) {
            try parse(String(repeating: "[", count: deepest) + String(repeating: "]", count: deepest))
        }
        let error = syntaxError(String(repeating: "[", count: deepest + 1) + String(repeating: "]", count: deepest + 1))
        #expect(error?.message.contains("nested more than \(deepest) levels") == true)
        #expect(error?.column == deepest + 1)
    }

    @Test("Description writes JSON that parses back to the same value")
    func descriptionRoundTrips() throws {
        let value = JSONValue.object([
            ("text", .string("quote \" backslash \\ newline \n tab \t bell \u{7} é")),
            ("list", .array([.number("1.5"), .null, .bool(true), .object([])])),
        ])
        #expect(try JSONValue.parse(Array(value.description.utf8)) == value)
        #expect(JSONValue.string("a\u{1}").description == #""a\u0001""#)
    }

    @Test("Kind descriptions read naturally in messages")
    func kindDescriptions() throws {
        #expect(try parse("\"x\"").kindDescription == "a string")
        #expect(try parse("[]").kindDescription == "an array")
        #expect(try parse("{}").kindDescription == "an object")
        #expect(try parse("1").kindDescription == "a number")
        #expect(try parse("true").kindDescription == "a boolean")
        #expect(try parse("null").kindDescription == "null")
    }
}
