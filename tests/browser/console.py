#!/usr/bin/env python3
"""Browser tests of the web console (issue 15) in a real Chromium.

Debian's `chromium` driven by Playwright for Python (`executable_path`, no
downloaded browser). `tests/it/console.rs` runs the hub and the simulated
department systems and calls one step per invocation:

    LIANQIN_CONSOLE_URL=http://127.0.0.1:PORT python3 tests/browser/console.py STEP [ARGS]

Each step logs in like a person would, checks what the page shows and exits
non-zero with a message naming what was expected and what was seen.
"""
import os
import re
import sys
import time

from playwright.sync_api import sync_playwright

URL = os.environ["LIANQIN_CONSOLE_URL"].rstrip("/")
CHROMIUM = os.environ.get("LIANQIN_CHROMIUM", "/usr/bin/chromium")
# The machines are offline: no background networking, no component updates.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Bounded by anything but letters and digits: a run of digits inside a hex
# token or hash is not an identifier.
CITIZEN_ID = re.compile(r"(?<![0-9A-Za-z])[1-8]\d{5}(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx](?![0-9A-Za-z])")
WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]


def citizen_ids(text):
    """Valid GB 11643 citizen IDs in `text` (check digit included, so
    18-character USCCs of enterprises are not counted)."""
    out = []
    for m in CITIZEN_ID.findall(text):
        s = sum(int(d) * w for d, w in zip(m[:17], WEIGHTS))
        if "10X98765432"[s % 11] == m[17].upper():
            out.append(m)
    return out
PHONE = re.compile(r"(?<![0-9A-Za-z])1[3-9]\d{9}(?![0-9A-Za-z])")


class Failed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)


def login(page, user, password=None):
    page.goto(URL + "/login")
    page.fill("#user", user)
    page.fill("#password", password or f"{user}-demo")
    page.click("#login")
    page.wait_for_load_state()
    check("/login" not in page.url, f"login as {user} failed: {page.inner_text('main')}")


def wait_for(page, path, pred, what, timeout=90):
    deadline = time.time() + timeout
    while True:
        page.goto(URL + path)
        if pred(page):
            return
        if time.time() > deadline:
            raise Failed(f"{what} (waited {timeout} s); the page shows:\n{page.inner_text('main')[:3000]}")
        time.sleep(1)


def row_class(page, source):
    row = page.locator(f"#src-{source}")
    return row.get_attribute("class") if row.count() else None


# ---------------------------------------------------------------- steps


def sources_failing(page, source):
    """The IT user sees their failing source in red with the error."""
    login(page, "xu.ops")
    wait_for(page, "/sources", lambda p: row_class(p, source) == "state-failing", f"{source} shown as failing")
    err = page.inner_text(f"#src-{source} td.error")
    check("500" in err, f"the error of {source} names the HTTP 500, got: {err!r}")
    color = page.eval_on_selector(f"#src-{source}", "e => getComputedStyle(e).backgroundColor")
    check(color == "rgb(255, 214, 214)", f"a failing row is red, got {color}")
    # Only their department's sources.
    ids = [r.get_attribute("id") for r in page.locator("#sources tbody tr").all()]
    check("src-hotline_12345" not in ids and "src-market_enterprise" not in ids, f"police IT sees only police sources: {ids}")
    check(page.locator("meta[http-equiv=refresh]").count() == 1, "the Sources page refreshes itself")


def sources_recovered(page, source):
    login(page, "xu.ops")
    def ok_with_checkpoint(p):
        if row_class(p, source) != "state-ok":
            return False
        cells = p.locator(f"#src-{source} td").all()
        return "since" in cells[12].inner_text() and int(cells[5].inner_text()) > 0
    wait_for(page, "/sources", ok_with_checkpoint, f"{source} recovered (state ok, records, its checkpoint shown)")


def quarantine_open(page, source, n):
    login(page, "xu.ops")
    page.goto(f"{URL}/quarantine?source={source}")
    got = page.inner_text("#open-count")
    check(got == n, f"open quarantined records of {source}: expected {n}, page shows {got}")
    reasons = page.inner_text("#reasons")
    check("failed at run time" in reasons, f"reasons listed by kind: {reasons!r}")
    # The raw record as the policy shows it to IT (sensitive: masked), with
    # its key and the reason naming the failing value.
    first = page.locator("#quarantine tbody tr").first
    cells = [c.inner_text() for c in first.locator("td").all()]
    check(re.fullmatch(r"r\d+07?", cells[1]) and cells[1].endswith("7"), f"the record key: {cells}")
    check("一百" in cells[2], f"the reason names the value: {cells}")
    check(cells[4].startswith("{") and "*" in cells[4], f"the raw record, masked for IT: {cells}")


def replay(page, source, n):
    login(page, "xu.ops")
    page.goto(f"{URL}/quarantine?source={source}")
    check(page.inner_text("#open-count") == n, f"{n} open before the replay: {page.inner_text('main')[:2000]}")
    page.on("dialog", lambda d: d.accept())
    page.click("#replay")
    page.wait_for_load_state()
    msg = page.inner_text("main")
    check(f"{n} 条已发布" in msg, f"the replay published {n}: {msg[:2000]}")
    wait_for(page, f"/quarantine?source={source}", lambda p: p.inner_text("#open-count") == "0", "nothing open after the replay")


def reconcile(page, http_source, file_source, file_lines):
    """Per source and day: raw vs libraries vs quarantine balance once the
    replay landed everything; the HTTP source's own totals match."""
    login(page, "xu.ops")
    page.goto(URL + "/reconcile")
    rows = [[c.inner_text() for c in r.locator("td").all()] for r in page.locator("#reconcile tbody tr").all()]
    mine = [r for r in rows if r[0] == file_source]
    check(mine, f"{file_source} has reconciliation rows: {rows}")
    check(all(r[6].startswith("平") for r in mine) and sum(int(r[2]) for r in mine) == sum(int(r[3]) for r in mine),
          f"{file_source}: every received version landed: {mine}")
    rep = [[c.inner_text() for c in r.locator("td").all()] for r in page.locator(f"#reported tbody tr[data-source={http_source}]").all()]
    check(rep, f"{http_source} has source-reported rows: {page.inner_text('#reported')}")
    check(all(r[6].startswith("平") for r in rep) and any(int(r[3]) > 0 for r in rep),
          f"{http_source}: the API's totals match what was published: {rep}")
    files = [[c.inner_text() for c in r.locator("td").all()] for r in page.locator(f"#reported tbody tr[data-source={file_source}]").all()]
    check(files and all(r[6].startswith("平") for r in files) and sum(int(r[3]) for r in files) == int(file_lines),
          f"{file_source}: the file's {file_lines} lines were all read: {files}")


def analyst(page):
    """chen.ecology: only permitted rows, masked columns; no IT or audit pages."""
    login(page, "chen.ecology")
    page.goto(URL + "/sources")
    check("source_operator" in page.inner_text("main"), "the Sources page is refused to analysts")
    page.goto(URL + "/audit")
    check("auditor" in page.inner_text("main"), "the Audit page is refused to analysts")
    page.goto(URL + "/sql")
    page.fill("#sql", "SELECT DISTINCT department, category FROM matter ORDER BY 1, 2")
    page.click("#run")
    page.wait_for_load_state()
    rows = page.locator("#results tbody tr").all()
    check(len(rows) > 0, f"ecology sees some matters: {page.inner_text('main')[:2000]}")
    for r in rows:
        dept, cat = [c.inner_text() for c in r.locator("td").all()]
        check(dept == "ecology" or cat in ("a", "b"), f"row outside chen.ecology's policy: {dept}, {cat}")
    # Every column of what ecology may read: no citizen ID or phone in clear.
    for sql in ("SELECT * FROM matter", "SELECT * FROM element", "SELECT * FROM matter_event"):
        page.fill("#sql", sql)
        page.click("#run")
        page.wait_for_load_state()
        text = page.inner_text("main")
        check("rows" in text, f"{sql}: {text[:500]}")
        ids = citizen_ids(text)
        phones = PHONE.findall(text)
        check(not ids and not phones, f"{sql}: clear identifiers in the browser: {ids[:3]} {phones[:3]}")
    # Another department's raw table: its rows are filtered away.
    page.fill("#sql", "SELECT * FROM raw_police_110")
    page.click("#run")
    page.wait_for_load_state()
    check(page.inner_text("#results-rows") == "0", f"no police raw rows for ecology: {page.inner_text('main')[:800]}")
    # A denied table is refused with the policy's message.
    page.fill("#sql", "SELECT * FROM audit")
    page.click("#run")
    page.wait_for_load_state()
    check("denied" in page.inner_text("main").lower(), f"audit refused: {page.inner_text('main')[:800]}")
    # CSV download of a permitted query.
    page.fill("#sql", "SELECT matter_id, category FROM matter ORDER BY matter_id")
    with page.expect_download() as d:
        page.click("#csv")
    path = d.value.path()
    lines = open(path, encoding="utf-8").read().splitlines()
    check(lines[0] == "matter_id,category" and len(lines) > 1, f"CSV download: {lines[:3]}")
    check(all(l.split(",")[1] in ("a", "b", "c", "d", "e", "f", "") for l in lines[1:]), "CSV rows")
    # The map draws the matters with coordinates, offline.
    page.goto(URL + "/map")
    pts = int(page.inner_text("#map-points"))
    check(pts > 0 and page.locator("svg#map circle").count() == pts, f"map points: {pts}")
    # Browse with search.
    page.goto(URL + "/libraries?lib=matter&q=")
    check(int(page.inner_text("#results-rows")) > 0, "the matter library lists rows")
    # The scan can fail: police analysts read IDs in clear, and it finds them.
    page.click("#logout")
    login(page, "wang.police")
    page.goto(URL + "/sql")
    page.fill("#sql", "SELECT * FROM element WHERE id_type = 'cid'")
    page.click("#run")
    page.wait_for_load_state()
    check(citizen_ids(page.inner_text("main")), "the ID scan finds clear IDs where the policy shows them")


def auditor(page, searched_user):
    login(page, "qian.audit")
    page.goto(URL + "/audit")
    verify = page.inner_text("#verify")
    check("all streams verify" in verify, f"every audit stream verifies: {verify}; {page.inner_text('#streams')}")
    page.fill("#a-user", searched_user)
    page.fill("#a-kind", "query")
    page.click("#a-search")
    page.wait_for_load_state()
    n = int(page.inner_text("#entries-rows"))
    text = page.inner_text("#entries")
    check(n > 0 and "SELECT DISTINCT department, category FROM matter" in text, f"the analyst's browser queries are in the audit: {n} {text[:1500]}")
    check("console" in text, "entries name the console stream")
    page.fill("#a-user", searched_user)
    page.fill("#a-kind", "export")
    page.click("#a-search")
    page.wait_for_load_state()
    check(int(page.inner_text("#entries-rows")) >= 1, "the CSV download is an export entry")
    page.fill("#a-user", searched_user)
    page.fill("#a-kind", "denial")
    page.click("#a-search")
    page.wait_for_load_state()
    check(int(page.inner_text("#entries-rows")) >= 1, "the analyst's refused pages are denials")


def csrf(page, browser):
    """A POST without the session's CSRF token, one from another origin, a
    forged cookie and a logged-out session's cookie are all refused."""
    login(page, "xu.ops")
    page.goto(URL + "/sql")
    token = page.get_attribute("input[name=_csrf]", "value")
    req = page.context.request
    r = req.post(URL + "/sql", form={"sql": "SELECT 1 AS one"})
    check(r.status == 403, f"POST without the CSRF token: {r.status}")
    r = req.post(URL + "/sql", form={"sql": "SELECT 1 AS one", "_csrf": "0" * 64})
    check(r.status == 403, f"POST with a wrong CSRF token: {r.status}")
    r = req.post(URL + "/sql", form={"sql": "SELECT 1 AS one", "_csrf": token}, headers={"Origin": "http://evil.example"})
    check(r.status == 403, f"POST from another origin: {r.status}")
    r = req.post(URL + "/sql", form={"sql": "SELECT 1 AS one", "_csrf": token})
    check(r.status == 200 and "one" in r.text(), f"the same POST with the token: {r.status}")
    old = [c for c in page.context.cookies() if c["name"] == "lianqin_session"][0]
    cookie = dict(old)
    check(cookie.get("httpOnly") and cookie.get("sameSite") == "Strict", f"cookie flags: {cookie}")
    # A foreign cookie: never issued by this console.
    other = browser.new_context()
    other.add_cookies([{**{k: old[k] for k in ("name", "domain", "path")}, "value": "ab" * 32}])
    p2 = other.new_page()
    p2.goto(URL + "/sources")
    check(p2.url.endswith("/login"), f"a foreign session cookie gets the login page: {p2.url}")
    r = other.request.post(URL + "/sql", form={"sql": "SELECT 1", "_csrf": token})
    check(r.status == 403, f"POST with a foreign cookie: {r.status}")
    # Log out; the old cookie is dead.
    page.goto(URL + "/sources")
    page.click("#logout")
    page.wait_for_load_state()
    check(page.url.endswith("/login"), "logged out")
    stolen = browser.new_context()
    stolen.add_cookies([{k: old[k] for k in ("name", "value", "domain", "path")}])
    r = stolen.request.post(URL + "/sql", form={"sql": "SELECT 1", "_csrf": token})
    check(r.status == 403, f"the logged-out session's cookie: {r.status}")
    # A wrong password is refused.
    page.goto(URL + "/login")
    page.fill("#user", "xu.ops")
    page.fill("#password", "wrong")
    page.click("#login")
    page.wait_for_load_state()
    check("/login" in page.url and "Login failed" in page.inner_text("main"), "wrong password refused")


def sharing(page, category):
    """A sharing request filed, approved and in force, all in the browser:
    the ecology analyst asks the police for category `category` matters
    (only four columns); the police approver sees it addressed to police
    and approves; the analyst then sees it granted."""
    import datetime
    login(page, "chen.ecology")
    page.goto(URL + "/sharing")
    page.select_option("#share-table", "matter*")
    page.select_option("#share-from", "police")
    page.fill("#share-rows", f"category={category}")
    page.fill("#share-columns", "matter_id,stage,category,department")
    page.fill("#share-purpose", "联合巡查统计")
    page.fill("#share-until", (datetime.date.today() + datetime.timedelta(days=2)).isoformat())
    page.click("#share-submit")
    page.wait_for_load_state()
    text = page.inner_text("main")
    m = re.search(r"sr-[0-9a-f]{10}", text)
    check(m and "filed" in text, f"the request is filed: {text[:1500]}")
    rid = m.group(0)
    check("pending" in page.inner_text(f"#mine #req-{rid}"), f"{rid} pending in My requests")
    check(page.locator(f"#req-{rid} button[value=approve]").count() == 0, "the requester cannot approve")
    page.click("#logout")
    page.wait_for_load_state()

    login(page, "wang.police")
    page.goto(URL + "/sharing")
    row = page.locator(f"#to-us #req-{rid}")
    check(row.count() == 1, f"{rid} addressed to police: {page.inner_text('main')[:1500]}")
    check("matter_id, stage, category, department" in row.inner_text(), "the asked columns are shown")
    row.locator("button[value=approve]").click()
    page.wait_for_load_state()
    check("approve" in page.inner_text("main"), f"approved: {page.inner_text('main')[:1500]}")
    check("granted" in page.inner_text(f"#to-us #req-{rid}"), f"{rid} granted")
    page.click("#logout")
    page.wait_for_load_state()

    login(page, "chen.ecology")
    page.goto(URL + "/sharing")
    check("granted" in page.inner_text(f"#mine #req-{rid}"), f"{rid} granted for the analyst")
    print(rid)


def main():
    step, args = sys.argv[1], sys.argv[2:]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        try:
            if step == "csrf":
                csrf(page, browser)
            else:
                globals()[step](page, *args)
        except Failed as e:
            shot = os.environ.get("LIANQIN_SCREENSHOT")
            if shot:
                page.screenshot(path=shot, full_page=True)
            print(f"console step {step} failed: {e}", file=sys.stderr)
            sys.exit(1)
        finally:
            browser.close()
    print(f"console step {step}: ok")


if __name__ == "__main__":
    main()
