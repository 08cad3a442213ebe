#!/usr/bin/env bash
# Rebuild plots/offline.html: DVC's plot page with Vega, Vega-Lite and Vega-Embed inlined (the
# versions dvc-render's page loads from a CDN), so `dvc plots show` draws without a network.
# .dvc/config points DVC at it (plots.html_template). Needs npm.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
packages=(vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2)
(cd "$tmp" && npm pack --silent "${packages[@]}" >/dev/null && for f in *.tgz; do mkdir "${f%.tgz}" && tar xzf "$f" -C "${f%.tgz}"; done)
python3 - "$tmp" "${packages[@]}" > offline.html.tmp <<'PY'
import pathlib, sys
tmp, packages = pathlib.Path(sys.argv[1]), sys.argv[2:]
scripts, licenses = [], {}
for spec in packages:
    name, version = spec.split("@")
    pkg = tmp / f"{name}-{version}" / "package"
    js = (pkg / "build" / f"{name}.min.js").read_text()
    assert "</script" not in js and "{plot_divs}" not in js
    scripts.append(f"<script>\n{js}\n</script>")
    copyright, body = (pkg / "LICENSE").read_text().strip().split("\n", 1)
    licenses.setdefault(body.strip(), []).append(f"{spec}: {copyright}")
notices = "\n\n".join("\n".join(owners) + "\n\n" + body for body, owners in licenses.items())
print("<!DOCTYPE html>\n<!--\nDVC's plot page for offline use, made by plots/make_template.sh from the npm "
      "packages " + ", ".join(packages) + ".\n\n" + notices.replace("--", "- -") + "\n-->")
print("<html>\n<head>\n{refresh_tag}\n<title>DVC Plot</title>\n" + "\n".join(scripts))
print("<style>\ntable { border-spacing: 15px; }\n</style>\n</head>\n<body>\n{plot_divs}\n</body>\n</html>")
PY
mv offline.html.tmp offline.html
