// Lianqin web console — embedded in the binary. Small conveniences only:
// every page works without it.
document.addEventListener("DOMContentLoaded", () => {
  // Ask before a replay: it publishes records to the hub again.
  const replay = document.getElementById("replay");
  if (replay) {
    replay.form.addEventListener("submit", (e) => {
      if (!window.confirm(replay.textContent + "?")) e.preventDefault();
    });
  }
  // Ctrl+Enter runs the SQL.
  const sql = document.getElementById("sql");
  if (sql) {
    sql.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && e.ctrlKey) document.getElementById("run").click();
    });
  }
});
