#!/usr/bin/python3
"""Turns the C++ blocks of one Markdown file into one C++ translation unit of Catch2 tests.

    extract_snippets.py DOC.md OUT.cc --name README.md

Every ```cpp block (also c++, cc, cxx) must have a marker on the line right before its fence,
saying how the block is compiled:

    <!-- snippet: statements -->       the block is the body of a function returning absl::Status
    <!-- snippet: statements run -->   ... and a test calls it: it must not return an error
    <!-- snippet: file -->             the block is a whole source file (its own namespace)
    <!-- snippet: file run -->         ... and a test calls its main(): it must return 0
    <!-- snippet: continue -->         the block goes on in the previous block's function body

A block without a marker, a marker without a block and an unknown marker are errors, reported as
DOC.md:LINE: error: ... (the build stops). The names the blocks use without declaring them
(LoadCatalogueFromOrigin, cache, backend, HttpResponse, ...) come from prelude.h. #include lines
are moved to the top of the file; #line directives make the compiler's messages point at DOC.md.
"""

import argparse
import re
import sys

FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})\s*([^\s`{]*)")
MARKER = re.compile(r"^\s*<!--\s*snippet:\s*(.*?)\s*-->\s*$")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
INCLUDE = re.compile(r"^\s*#\s*include\b")
CPP_LANGUAGES = {"cpp", "c++", "cc", "cxx"}
MODES = {"statements", "statements run", "file", "file run", "continue"}


class SnippetError(Exception):
    def __init__(self, line, message):
        super().__init__(message)
        self.line = line


class Block:
    def __init__(self, mode, first_line, lines, heading):
        self.mode = mode              # one of MODES
        self.first_line = first_line  # 1-based line in the .md of the block's first code line
        self.lines = lines            # the code, fence indentation removed
        self.heading = heading        # the section the block is in


def parse_blocks(text):
    """Returns the C++ blocks of a Markdown text, each with its marker's mode."""
    lines = text.split("\n")
    blocks = []
    heading = ""
    pending_marker = None  # (line number, mode) of a marker waiting for its block
    i = 0
    while i < len(lines):
        line = lines[i]
        number = i + 1
        marker = MARKER.match(line)
        fence = FENCE.match(line)
        if pending_marker and not fence:
            raise SnippetError(pending_marker[0],
                               "snippet marker not followed by a ```cpp block on the next line")
        if marker:
            mode = " ".join(marker.group(1).split())
            if mode not in MODES:
                raise SnippetError(number, "unknown snippet marker '%s' (one of: %s)" %
                                   (mode, ", ".join(sorted(MODES))))
            pending_marker = (number, mode)
            i += 1
            continue
        if fence:
            indent, opener, language = fence.group(1), fence.group(2), fence.group(3).lower()
            body = []
            i += 1
            while i < len(lines):
                closing = FENCE.match(lines[i])
                if (closing and closing.group(2)[0] == opener[0] and
                        len(closing.group(2)) >= len(opener) and not closing.group(3)):
                    break
                body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
                i += 1
            if language in CPP_LANGUAGES:
                if not pending_marker:
                    raise SnippetError(number, "```%s block without a snippet marker on the line "
                                       "before it (<!-- snippet: statements|statements run|file|"
                                       "file run|continue -->, see tests/doc_snippets/)" % language)
                blocks.append(Block(pending_marker[1], number + 1, body, heading))
            elif pending_marker:
                raise SnippetError(pending_marker[0], "snippet marker before a ```%s block, not "
                                   "a ```cpp one" % (language or "(no language)"))
            pending_marker = None
            i += 1  # the closing fence
            continue
        title = HEADING.match(line)
        if title:
            heading = title.group(1)
        i += 1
    if pending_marker:
        raise SnippetError(pending_marker[0], "snippet marker at the end of the file")
    return blocks


def c_string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Writer:
    """Collects the output lines, so that #line directives can name the generated file's lines."""

    def __init__(self, out_path):
        self.out_path = out_path
        self.lines = []

    def add(self, *lines):
        self.lines.extend(lines)

    def at_source(self, md_path, line):
        self.lines.append("#line %d %s" % (line, c_string(md_path)))

    def back_here(self):
        # The directive names the line after itself.
        self.lines.append("#line %d %s" % (len(self.lines) + 2, c_string(self.out_path)))


def generate(md_path, name, blocks, out_path):
    out = Writer(out_path)
    out.add("// Generated from %s by tests/doc_snippets/extract_snippets.py: edit the .md file."
            % name, "")
    if not blocks:
        out.add("// (no C++ blocks)")
        return "\n".join(out.lines) + "\n"

    # Groups: a block and the `continue` blocks after it share one function body.
    groups = []
    for block in blocks:
        if block.mode == "continue":
            if not groups or not groups[-1][0].mode.startswith("statements"):
                raise SnippetError(block.first_line - 1, "'continue' snippet without a "
                                   "'statements' snippet before it")
            groups[-1].append(block)
        else:
            groups.append([block])

    # The prelude first: its inline variables are then initialized before any snippet's.
    out.add('#include "prelude.h"', "")
    for block in blocks:
        for offset, line in enumerate(block.lines):
            if INCLUDE.match(line):
                out.at_source(md_path, block.first_line + offset)
                out.add(line)
    out.back_here()
    out.add("", "#include <catch2/catch.hpp>", "")

    for group in groups:
        first = group[0]
        namespace = "doc_snippet_%s_%d" % (re.sub(r"\W", "_", name), first.first_line - 1)
        label = "%s:%d" % (name, first.first_line - 1)
        out.add("// %s, %s (%s)" % (label, first.mode, first.heading),
                "namespace %s {" % namespace)
        is_file = first.mode.startswith("file")
        if not is_file:
            out.add("[[maybe_unused]] absl::Status Run() {")
        for block in group:
            out.at_source(md_path, block.first_line)
            # Includes went to the top; blank lines keep the line numbers.
            out.add(*["" if INCLUDE.match(line) else line for line in block.lines])
        out.back_here()
        if not is_file:
            out.add("  return absl::OkStatus();", "}")
        out.add("}  // namespace %s" % namespace, "")
        if first.mode.endswith(" run"):
            # ctest hands the name back to Catch as a test spec: keep it to plain characters.
            heading = re.sub(r"[^A-Za-z0-9 .:'-]", "", first.heading)
            test_name = c_string("%s (%s)" % (label, heading) if heading else label)
            out.add("TEST_CASE(%s, \"[snippet]\") {" % test_name)
            if is_file:
                out.add("  REQUIRE(%s::main() == 0);" % namespace)
            else:
                out.add("  const absl::Status status = %s::Run();" % namespace,
                        "  INFO(status.ToString());",
                        "  REQUIRE(status.ok());")
            out.add("}", "")
    return "\n".join(out.lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("markdown")
    parser.add_argument("output")
    parser.add_argument("--name", help="the .md file's name in test names (default: its path)")
    args = parser.parse_args()
    name = args.name or args.markdown
    with open(args.markdown, encoding="utf-8") as f:
        text = f.read()
    try:
        source = generate(args.markdown, name, parse_blocks(text), args.output)
    except SnippetError as e:
        print("%s:%d: error: %s" % (args.markdown, e.line, e), file=sys.stderr)
        return 1
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
