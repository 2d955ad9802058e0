"""The CSV helpers the results scripts share: read a lab CSV with its provenance lines,
write one atomically with them."""
import csv
import io
import os


def read(path):
    """(provenance lines without '# ', rows as dicts) of a lab CSV."""
    prov, body = [], []
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                prov.append(line[1:].strip())
            elif line.strip():
                body.append(line)
    return prov, list(csv.DictReader(io.StringIO("".join(body))))


def write(path, prov, header, rows):
    """Writes a temporary file then renames it over path: never a half-written file."""
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        for p in prov:
            f.write(f"# {p}\n")
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    os.replace(tmp, path)
