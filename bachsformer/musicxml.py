"""Reading a MusicXML score (its text, or a compressed .mxl) as MIDI bytes, with bounds (docs/design.md, The page).

A score comes from anyone: a 600 kB .mxl may unpack to 600 MB, and a few MB of nested elements can
keep a parser busy for minutes. So every score is read the same way, on the command line and on the
page:

- an .mxl archive's members are counted from its directory before a byte is unpacked: over
  MAX_XML_BYTES in all, it is refused (`ScoreTooLarge`);
- the XML is scanned by expat, streaming, before music21 sees it: elements nested deeper than
  MAX_DEPTH, or entity declarations (the "billion laughs"), refuse it;
- music21 then reads it in a child process (two at a time) (`python -m bachsformer.musicxml`) that holds at most
  MAX_MEMORY_BYTES of memory and PARSE_SECONDS of CPU time, is killed at PARSE_SECONDS of wall time,
  and ends itself when its parent goes. Nothing is written to disk: the archive is unpacked in memory.

What music21 writes is MIDI, and it goes through the codec like any other file, so a score and a MIDI
file of the same music give the same quarters.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from xml.parsers import expat

from bachsformer.errors import BachsformerError

MAX_XML_BYTES = 20_000_000  # a MusicXML score of some 50,000 notes; an .mxl's members, unpacked, in all
MAX_DEPTH = 64  # MusicXML nests about ten deep (score-partwise, part, measure, note, notations, ...)
MAX_MEMORY_BYTES = 1_500_000_000  # the child's address space: music21 reading the largest score allowed
PARSE_SECONDS = 30.0  # the child's CPU time and wall time
READERS = threading.BoundedSemaphore(2)  # children reading at once; another score waits its turn
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


class ScoreError(BachsformerError):
    """A score that cannot be read: the message is one line naming it. `status` is the HTTP status to answer."""

    status = 400

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status or self.status


class ScoreTooLarge(ScoreError):
    status = 413


def is_musicxml(data: bytes) -> bool:
    """Whether a file's bytes are a MusicXML score: a zip archive (.mxl) or XML text."""
    return data[:2] == b"PK" or data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"<"


def unpacked_xml(data: bytes, source: str) -> bytes:
    """The score's XML: the text as it is, or an .mxl archive's score unpacked in memory.

    The archive's members are summed from its directory first; over MAX_XML_BYTES, ScoreTooLarge.
    The score is the container's rootfile (META-INF/container.xml), else the first .xml or .musicxml.
    """
    if data[:2] != b"PK":
        if len(data) > MAX_XML_BYTES:
            raise ScoreTooLarge(f"{source}: {len(data):,} bytes of MusicXML, over the limit of {MAX_XML_BYTES:,}")
        return data
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise ScoreError(f"{source}: not a MusicXML score (not a readable .mxl archive: {error})") from None
    unpacked = sum(member.file_size for member in members)
    if unpacked > MAX_XML_BYTES:
        raise ScoreTooLarge(
            f"{source}: unpacks to {unpacked:,} bytes, over the limit of {MAX_XML_BYTES:,}; send a smaller score"
        )
    names = [member.filename for member in members]
    root = None
    if "META-INF/container.xml" in names:
        container = _member(archive, "META-INF/container.xml", source)
        for attributes in _rootfiles(container):
            if attributes.get("full-path") in names:
                root = attributes["full-path"]
                break
    if root is None:
        root = next((n for n in names if n.endswith((".xml", ".musicxml")) and not n.startswith("META-INF/")), None)
    if root is None:
        raise ScoreError(f"{source}: an archive without a MusicXML score (.xml or .musicxml) in it")
    return _member(archive, root, source)


def _member(archive: zipfile.ZipFile, name: str, source: str) -> bytes:
    try:
        with archive.open(name) as member:  # reads at most the size its directory declares
            return member.read(MAX_XML_BYTES + 1)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, OSError, EOFError) as error:
        raise ScoreError(f"{source}: cannot unpack {name} ({error})") from None


def _rootfiles(container: bytes) -> list[dict]:
    found = []
    parser = expat.ParserCreate()
    parser.StartElementHandler = lambda tag, attributes: found.append(attributes) if tag == "rootfile" else None
    try:
        parser.Parse(container, True)
    except expat.ExpatError:
        return []
    return found


def check_xml(xml: bytes, source: str) -> None:
    """ScoreError unless `xml` is well-formed, nests at most MAX_DEPTH deep and declares no entities."""
    depth = 0

    def start(tag, attributes):
        nonlocal depth
        depth += 1
        if depth > MAX_DEPTH:
            raise ScoreError(f"{source}: not a MusicXML score (elements nested over {MAX_DEPTH} deep)")

    def end(tag):
        nonlocal depth
        depth -= 1

    def entity(*args):
        raise ScoreError(f"{source}: not a MusicXML score (it declares XML entities, which a score does not need)")

    parser = expat.ParserCreate()
    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.EntityDeclHandler = entity
    try:
        parser.Parse(xml, True)
    except expat.ExpatError as error:
        reason = f"{expat.ErrorString(error.code)}, line {error.lineno}"
        raise ScoreError(f"{source}: not a MusicXML score (not well-formed XML: {reason})") from None


def midi_of_xml(xml: bytes, source: str) -> bytes:
    """A checked score's XML as MIDI bytes, read by music21 in this process (what the child runs)."""
    try:
        import music21
        import music21.midi.translate
    except ImportError:
        raise ScoreError(f"{source}: reading MusicXML needs music21: pip install music21") from None
    try:
        score = music21.converter.parseData(xml.decode("utf-8", errors="replace"), format="musicxml")
        return music21.midi.translate.streamToMidiFile(score).writestr()
    except MemoryError:
        raise ScoreError(f"{source}: needs more than {MAX_MEMORY_BYTES // 10**6} MB to read") from None
    except Exception as error:  # music21 raises many kinds for a bad score; each is the file's fault
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ScoreError(f"{source}: not a MusicXML score music21 can read ({reason[:200]})") from None


def musicxml_to_midi_bytes(data: bytes, source: str) -> bytes:
    """A MusicXML score (text or .mxl) as the bytes of a MIDI file, within the bounds of the module doc.

    Raises ScoreError (ScoreTooLarge for an archive that unpacks past MAX_XML_BYTES), naming `source`.
    """
    xml = unpacked_xml(data, source)
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))
    if not READERS.acquire(timeout=PARSE_SECONDS):
        raise ScoreError(f"{source}: other scores are being read; try again in a minute", 429) from None
    try:
        child = subprocess.run(
            [sys.executable, "-m", "bachsformer.musicxml", source],
            input=xml,
            capture_output=True,
            timeout=PARSE_SECONDS,
            env=environment,
        )
    except subprocess.TimeoutExpired:  # the child is killed
        raise ScoreError(f"{source}: took over {PARSE_SECONDS:g} s to read; not a score this reads") from None
    finally:
        READERS.release()
    if child.returncode == 0:
        return child.stdout
    lines = child.stderr.decode("utf-8", errors="replace").strip().splitlines()
    message = lines[-1].removeprefix("error: ") if lines else ""
    if child.returncode == 2 and message:
        raise ScoreError(message)
    raise ScoreError(  # killed at its memory or CPU limit (SIGKILL, SIGXCPU), or crashed
        f"{source}: reading it went over {MAX_MEMORY_BYTES // 10**6} MB or {PARSE_SECONDS:g} s (exit status"
        f" {child.returncode}); not a score this reads"
    )


def _limit_self() -> None:
    """The child's bounds: its memory and CPU time, and an end when the parent goes."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MAX_MEMORY_BYTES, MAX_MEMORY_BYTES))
    seconds = int(PARSE_SECONDS) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def main() -> None:
    """The child: the checked XML on stdin, MIDI bytes on stdout, or `error: ...` on stderr and exit status 2."""
    source = sys.argv[1] if len(sys.argv) > 1 else "<stdin>"
    try:
        if sys.platform != "win32":
            _limit_self()
        xml = sys.stdin.buffer.read(MAX_XML_BYTES + 1)
        check_xml(xml, source)
        midi = midi_of_xml(xml, source)
    except BachsformerError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.stdout.buffer.write(midi)


if __name__ == "__main__":
    main()
