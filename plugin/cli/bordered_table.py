"""calicoctl's bordered tables (`node status`), laid out as its table library
(olekukonko/tablewriter v0.0.5, which every calicoctl through v3.32 uses)
lays them out: headers centred (the odd space on the right), cells
left-aligned with one space of padding, rules above and below the headers
and at the bottom.  A cell wider than MAX_WIDTH wraps at spaces into lines
of minimal raggedness (tablewriter's WrapString) and its column is then
MAX_WIDTH wide, or as wide as its longest word."""

MAX_WIDTH = 30
_PENALTY = 100_000  # tablewriter's cost of a line longer than the limit


def render(headers: list[str], rows: list[list[str]]) -> str:
    header_lines = [_wrap(h) for h in headers]
    row_lines = [[_wrap(cell) for cell in row] for row in rows]
    # A wrapped cell makes its column at least MAX_WIDTH wide.
    widths = [max(max(map(len, cell)) if len(cell) == 1 else max(MAX_WIDTH, *map(len, cell))
                  for cell in column)
              for column in zip(header_lines, *row_lines)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [rule, *_lines(header_lines, widths, _centre), rule]
    for row in row_lines:
        out += _lines(row, widths, str.ljust)
    out.append(rule)
    return "\n".join(out) + "\n"


def _lines(cells: list[list[str]], widths: list[int], pad) -> list[str]:
    height = max(len(cell) for cell in cells)
    return ["|" + "|".join(f" {pad(cell[i] if i < len(cell) else '', w)} "
                           for cell, w in zip(cells, widths)) + "|"
            for i in range(height)]


def _centre(text: str, width: int) -> str:
    left = (width - len(text)) // 2
    return " " * left + text.ljust(width - left)


def _wrap(text: str) -> list[str]:
    """text as tablewriter puts it in a cell: one line if it fits in
    MAX_WIDTH, else wrapped at spaces with minimal raggedness."""
    if len(text) <= MAX_WIDTH:
        return [text]
    words = text.split(" ")
    limit = max(MAX_WIDTH, *(len(w) for w in words))
    n = len(words)
    # length[i][j]: the words i..j on one line; cost[i]: the best wrap of
    # words i.. (the last line is free); breaks[i]: where its first line ends.
    cost, breaks = [0] * (n + 1), [n] * n
    for i in range(n - 1, -1, -1):
        length = len(words[i])
        lengths = [length]
        for word in words[i + 1:]:
            length += 1 + len(word)
            lengths.append(length)
        if lengths[-1] <= limit:
            cost[i] = 0
            continue
        cost[i] = None
        for j in range(i + 1, n):
            line = lengths[j - 1 - i]
            c = (limit - line) ** 2 + cost[j] + (_PENALTY if line > limit else 0)
            if cost[i] is None or c < cost[i]:
                cost[i], breaks[i] = c, j
    lines, i = [], 0
    while i < n:
        lines.append(" ".join(words[i:breaks[i]]))
        i = breaks[i]
    return lines
