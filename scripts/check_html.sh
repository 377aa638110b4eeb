#!/usr/bin/env bash
# Opens a headstart HTML report (evaluate --html, audit --html) in headless Chromium: takes a
# screenshot, counts the thumbnails in the file and those the browser rendered, the confusion-matrix
# links and the photo sections they open, then opens the first section and counts what it renders.
# Prints one JSON line; exits 1 if the page shows no rendered thumbnail or a link opens nothing.
# Usage: scripts/check_html.sh REPORT.html [OUT_DIR]   (Debian: apt-get install chromium)
set -euo pipefail
report=$(realpath "$1")
out=$(realpath -m "${2:-${report%.html}.check}")
mkdir -p "$out"
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then echo "check_html.sh: no Chromium (apt-get install chromium)" >&2; exit 2; fi
flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run --mute-audio)

"$browser" "${flags[@]}" --window-size=1280,1800 --screenshot="$out/screenshot.png" \
  "file://$report" >/dev/null 2>&1
echo "screenshot: $out/screenshot.png" >&2

# The counter: a page beside a copy of the report, reading it through an iframe (same folder, so
# --allow-file-access-from-files lets it look inside).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$report" "$work/report.html"
cat > "$work/check.html" <<'EOF'
<!doctype html><html><body><pre id="result">pending</pre>
<iframe id="f" src="report.html" style="width:1280px;height:1800px"></iframe>
<script>
const f = document.getElementById('f');
// Rendered: laid out (not inside a closed section) and decoded to a picture.
const shown = d => [...d.querySelectorAll('img')]
  .filter(i => i.getClientRects().length > 0 && i.complete && i.naturalWidth > 0);
f.onload = () => setTimeout(() => {
  const d = f.contentDocument;
  const r = {
    images: d.querySelectorAll('img').length,
    rendered_on_open: shown(d).length,
    in_closed_sections: [...d.querySelectorAll('section.cell img')].length,
    figures: d.querySelectorAll('figure').length,
    cell_links: d.querySelectorAll('table.confusion a, a[href^="#tag-"]').length,
    sections: d.querySelectorAll('section.cell').length,
    tables: d.querySelectorAll('table').length,
    curves: d.querySelectorAll('svg polyline').length,
  };
  const first = d.querySelector('section.cell');
  if (!first) { document.getElementById('result').textContent = JSON.stringify(r); return; }
  r.opened = first.id;
  r.hidden_before = getComputedStyle(first).display === 'none';
  f.contentWindow.location.hash = first.id;
  setTimeout(() => {
    r.visible_after = getComputedStyle(first).display !== 'none';
    r.opened_images = first.querySelectorAll('img').length;
    r.opened_rendered = shown(first).length;
    document.getElementById('result').textContent = JSON.stringify(r);
  }, 3000);
}, 3000);
</script></body></html>
EOF
dom=$("$browser" "${flags[@]}" --allow-file-access-from-files --virtual-time-budget=20000 \
  --dump-dom "file://$work/check.html" 2>/dev/null)
json=$(printf '%s' "$dom" | sed -n 's:.*<pre id="result">\([^<]*\)</pre>.*:\1:p' | sed 's/&quot;/"/g')
echo "$json" | tee "$out/counts.json"
python3 - "$json" <<'EOF'
import json, sys
r = json.loads(sys.argv[1])
bad = []
if r["images"] and not r["rendered_on_open"]:
    bad.append("no thumbnail rendered on the opened page")
if "opened" in r and not (r["hidden_before"] and r["visible_after"]):
    bad.append(f"section {r['opened']} does not open from its link")
if r.get("opened_images") and not r.get("opened_rendered"):
    bad.append(f"section {r['opened']} renders none of its {r['opened_images']} thumbnails")
if bad:
    sys.exit("check_html.sh: " + "; ".join(bad))
EOF
