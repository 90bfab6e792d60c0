#!/usr/bin/env bash
# The layering rule (issue 12), checked by `make test`:
#   (a) only Sources/Proxy/Loop/ imports the C modules (CUV and every other system-library or C
#       target of Package.swift);
#   (b) Sources/Proxy/HTTP/ uses nothing from Loop/ or Config/: it names no type declared at the
#       top level of a file there, and imports no C module.
# Comments and string literals are ignored (string interpolations are checked as code). Nested
# types of Loop/ and Config/ (e.g. `AccessLogConfig.Format`) are not looked for: they can only be
# reached through their top-level type, which is. System libc modules (Glibc, Darwin, Musl) are
# not C targets of this package and stay allowed everywhere.
# Prints one line per violation (file:line: what — which rule) and exits 1; exits 0 when clean.
#   Scripts/check-layering.sh [ROOT]    ROOT: the package to check (default: this repository)
set -euo pipefail
cd "${1:-$(dirname "$0")/..}"

exec python3 - <<'PY'
import os, re, sys

PROXY, LOOP, CONFIG, HTTP = "Sources/Proxy", "Sources/Proxy/Loop", "Sources/Proxy/Config", "Sources/Proxy/HTTP"

def strip(src):
    """Swift source with comments and string-literal contents blanked; newlines (so line
    numbers) kept. Interpolations `\\( … )` stay, as code."""
    out, i, n = [], 0, len(src)
    stack = [["code", 0]]          # ["code", paren depth] | ["str", hashes, multiline]
    while i < n:
        top, c = stack[-1], src[i]
        if top[0] == "code":
            if src.startswith("//", i):
                j = src.find("\n", i)
                i = n if j < 0 else j
                continue
            if src.startswith("/*", i):
                depth, i = 1, i + 2
                while i < n and depth:
                    if src.startswith("/*", i): depth, i = depth + 1, i + 2
                    elif src.startswith("*/", i): depth, i = depth - 1, i + 2
                    else:
                        if src[i] == "\n": out.append("\n")
                        i += 1
                continue
            m = re.compile(r'(#*)("""|")').match(src, i)
            if m and (m.group(1) or c == '"'):
                stack.append(["str", len(m.group(1)), m.group(2) == '"""'])
                out.append(" ")
                i = m.end()
                continue
            if len(stack) > 1:     # inside an interpolation
                if c == "(": top[1] += 1
                elif c == ")":
                    if top[1] == 0:
                        stack.pop(); i += 1
                        continue
                    top[1] -= 1
            out.append(c); i += 1
        else:
            _, hashes, multi = top
            close = ('"""' if multi else '"') + "#" * hashes
            if src.startswith(close, i):
                stack.pop(); out.append(" "); i += len(close)
                continue
            if src.startswith("\\" + "#" * hashes, i):
                i += 1 + hashes
                if i < n and src[i] == "(":
                    stack.append(["code", 0]); out.append(" "); i += 1
                else:
                    if i < n and src[i] == "\n": out.append("\n")
                    i += 1
                continue
            if c == "\n":
                out.append("\n")
                if not multi: stack.pop()   # unterminated: resynchronise
            i += 1
    return "".join(out)

def swift_files(root):
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            if f.endswith(".swift"):
                yield os.path.join(d, f)

def stripped_lines(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return strip(f.read()).split("\n")

def under(path, folder):
    return path == folder or path.startswith(folder + "/")

# The C modules: system-library targets of Package.swift, targets whose folder holds no Swift,
# and the modules that any module map under Sources/ declares. CUV in any case.
c_modules = {"CUV"}
with open("Package.swift", encoding="utf-8") as f:
    package = f.read()
for kind, name in re.findall(r'\.(systemLibrary|target)\s*\(\s*name:\s*"([^"]+)"', package):
    folder = os.path.join("Sources", name)
    if kind == "systemLibrary" or (os.path.isdir(folder) and not any(swift_files(folder))):
        c_modules.add(name)
for d in sorted(os.listdir("Sources")):
    for mm in (os.path.join("Sources", d, "module.modulemap"), os.path.join("Sources", d, "include", "module.modulemap")):
        if os.path.isfile(mm):
            with open(mm, encoding="utf-8") as f:
                c_modules.update(re.findall(r'^\s*(?:explicit\s+|framework\s+)*module\s+([A-Za-z_]\w*)', f.read(), re.M))

modules = "|".join(sorted(map(re.escape, c_modules)))
import_re = re.compile(
    r'^\s*(?:@\w+(?:\([^)]*\))?\s+)*(?:(?:public|package|internal|fileprivate|private|open)\s+)?'
    r'import\s+(?:(?:typealias|struct|class|enum|protocol|let|var|func)\s+)?(' + modules + r')\b')

# Types declared at the top level (column 0) of Loop/ and Config/, except private ones, which
# HTTP/ could not name anyway.
decl_re = re.compile(
    r'^(?:@\w+(?:\([^)]*\))?\s+)*((?:(?:public|package|internal|fileprivate|private|open|final|indirect|nonisolated)\s+)*)'
    r'(?:class|struct|enum|protocol|actor|typealias)\s+([A-Za-z_]\w*)')
declared = {}
for folder in (LOOP, CONFIG):
    for path in swift_files(folder):
        for line in stripped_lines(path):
            m = decl_re.match(line)
            if m and not re.search(r'\b(private|fileprivate)\b', m.group(1)):
                declared.setdefault(m.group(2), path)
mention_re = re.compile(r'\b(' + "|".join(sorted(map(re.escape, declared))) + r')\b') if declared else None

violations, checked = [], 0
for path in swift_files(PROXY):
    if under(path, LOOP):
        continue
    checked += 1
    in_http = under(path, HTTP)
    for number, line in enumerate(stripped_lines(path), 1):
        m = import_re.match(line)
        if m:
            rule = "HTTP/ imports nothing from Loop/ or Config/, and only Loop/ imports the C modules" if in_http \
                else "only Sources/Proxy/Loop/ imports the C modules"
            violations.append(f"{path}:{number}: imports {m.group(1)}, a C module: {rule} (layering rule, issue 12)")
        elif in_http and mention_re:
            for name in dict.fromkeys(mention_re.findall(line)):
                violations.append(f"{path}:{number}: names {name}, declared in {declared[name]}: "
                                  "HTTP/ uses nothing from Loop/ or Config/ (layering rule, issue 12)")

if checked == 0:
    print(f"check-layering: no Swift files under {PROXY} outside Loop/: wrong folder?", file=sys.stderr)
    sys.exit(2)
for v in violations:
    print(v, file=sys.stderr)
if violations:
    print(f"check-layering: {len(violations)} violation(s) of the layering rule (Scripts/check-layering.sh)", file=sys.stderr)
    sys.exit(1)
print(f"check-layering: ok ({checked} files outside Loop/; C modules: {', '.join(sorted(c_modules))}; "
      f"{len(declared)} Loop/ and Config/ types kept out of HTTP/)")
PY
