"""Reading and using the Experiments run grid (a st.dataframe: glide-data-grid on a canvas) in a
real browser. Its accessible <table> holds the texts of the rows in view; a row is chosen with a
click in its row-marker column (the canvas has no element per row)."""

from __future__ import annotations

from browser_support import wait_idle, wait_settled

# The run grid's accessible table: [headers, ...rows], each row its cells' texts.
GRID = """() => {
    const frames = [...document.querySelectorAll('[data-testid="stDataFrame"]')];
    const grid = frames.find(f => [...f.querySelectorAll('th')].some(th => th.innerText.trim() === 'Marks'));
    const table = grid && grid.querySelector('table');
    if (!table) return null;
    const headers = [...table.querySelectorAll('thead th')].map(th => th.innerText.trim());
    const rows = [...table.querySelectorAll('tbody tr')].map(tr => [...tr.querySelectorAll('td')].map(td => td.innerText.trim()));
    return [headers, ...rows];
}"""

HEADER_PX = 35  # Streamlit's data grid: the header's and every row's height
ROW_PX = 35


def grid(page) -> list[dict[str, str]]:
    """The rows in view, each as {column header: text} (the row-marker column dropped)."""
    page.wait_for_function(f"() => ({GRID})() !== null", timeout=60_000, polling=200)
    headers, *rows = page.evaluate(GRID)
    # Cells and headers line up (the row-marker column has an empty header, and is dropped).
    return [{h: cells[i] for i, h in enumerate(headers) if h} for cells in rows]


def grid_frame_locator(page):
    return page.get_by_test_id("stDataFrame").filter(has=page.locator("th", has_text="Marks"))


def choose_grid_row(page, position: int) -> None:
    """Tick the row-marker box of the `position`-th row in view (0-based)."""
    frame = grid_frame_locator(page)
    frame.scroll_into_view_if_needed()
    box = frame.bounding_box()
    assert box is not None
    frame.hover()  # the row markers show on hover
    page.mouse.click(box["x"] + 18, box["y"] + HEADER_PX + ROW_PX * position + ROW_PX / 2)
    wait_idle(page)
    wait_settled(page)


# Every text in the run grid's accessible table (its rows in view), for wait_for_function.
GRID_TEXT = f"() => {{ const g = ({GRID})(); return g ? g.flat().join('\\n') : ''; }}"


def wait_grid_text(page, text: str, timeout_ms: int = 60_000) -> None:
    """Until a cell of the run grid (in view) holds `text`."""
    page.wait_for_function(f"(t) => ({GRID_TEXT})().includes(t)", arg=text, timeout=timeout_ms, polling=200)
