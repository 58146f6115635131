"""The page: a local web app where a musician enters a tune, hears it harmonized, reads the score and
takes the files home (docs/design.md, The page).

`create_app(config)` builds the FastAPI app around one model pair, loaded once; `serve.py` runs it
with uvicorn. The server keeps no state between requests: a piece travels to the page as JSON (its
notes, meter, MIDI, MusicXML and score) and comes back as JSON to have a bar regenerated, so
requests that arrive together share nothing but the models, and model calls take turns, in the order
they came (`Turns`). A job of the page (harmonize, regenerate, compose) asked for with
`Accept: application/x-ndjson` answers as JSON lines while it waits and runs (`stream`): {"queued": n}
while n requests are ahead of it, {"done": k, "total": Q} as its quarters are written, then the JSON a
plain request gets; without that header it answers that JSON alone, once done.
Every piece comes with its analysis (bachsformer/analyze.py): keys, numerals, cadences and four-part
faults, the numerals also written under the bass of its MusicXML. Everything a request reads or writes
stays in memory; a MusicXML score is read by music21 in a child process within bounds
(bachsformer/musicxml.py). Only the files of bachsformer/static/ are served.

Every input runs through the codec as a file would: a tune entered on the page is written as MIDI
bytes and read back, an uploaded MusicXML score is turned into MIDI bytes by music21; every piece's
file is the one generate.py writes (`compose.piece_midi_bytes`). Bad input is
a 4xx answer whose JSON `detail` is one line naming what is wrong; nothing a user sends ends in a 5xx.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NamedTuple
from urllib.parse import quote

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from bachsformer.analyze import Analysis, NoHarmonyError, analyze, as_music
from bachsformer.compose import Composition, compose, load_models, piece_midi_bytes, refuse_mode_change, voiced
from bachsformer.config import Config, GenerateConfig
from bachsformer.errors import BachsformerError
from bachsformer.harmonize import (
    harmonize,
    keep_tune,
    last_note,
    piece_quarters,
    piece_roll,
    regenerate,
    thin_harmony_warning,
    tune_name,
)
from bachsformer.metrics import highest_line
from bachsformer.midi import (
    LOWEST_PITCH,
    MAX_TEMPO_BPM,
    MIN_TEMPO_BPM,
    NUM_KEYS,
    STEPS_PER_QUARTER,
    Meter,
    Tempo,
    TimeSignature,
    playable_tempos,
    quarters_to_midi_bytes,
    quarters_to_notes,
    read_meter_bytes,
    read_midi_bytes,
    read_midi_tracks_bytes,
)
from bachsformer.musicxml import is_musicxml, musicxml_to_midi_bytes
from bachsformer.score import musicxml_bytes, voices_musicxml_bytes
from bachsformer.tunefirst import compose_tune_first, load_tune_for
from bachsformer.voices import VOICE_NAMES

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 1_000_000  # a tune of a thousand bars is some 20 kB
MAX_QUARTERS = 256  # the longest tune harmonized or piece composed: 64 bars of 4/4
MAX_SEED = 2**31 - 1  # a number the page's JavaScript holds exactly
MAX_CANDIDATES = 64
MAX_GUIDANCE = 10.0
NDJSON = "application/x-ndjson"  # a job's answer as JSON lines: asked for in the Accept header
HIGHEST_PITCH = LOWEST_PITCH + NUM_KEYS - 1
SCORE_OPTIONS = {  # verovio: one tall page that the page scales to its width
    "pageWidth": 1800,
    "pageHeight": 60000,
    "adjustPageHeight": True,
    "scale": 50,
    "minLastJustification": 0,  # the last system is justified too, however short
    "header": "none",
    "footer": "none",
    "svgViewBox": True,
}


class RequestError(BachsformerError):
    """A request the server cannot use; `status` is its HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Tune(NamedTuple):
    """A tune read from a file or the page: its top line as quarters [Q, 88, 32], its meter, what was warned,
    and the name its track keeps in the harmonization (`harmonize.tune_name`)."""

    melody: np.ndarray
    meter: Meter
    warnings: list[str]
    name: str = VOICE_NAMES[0]


def read_tune(data: bytes, source: str) -> Tune:
    """The tune of a MIDI file or MusicXML score: its highest line, in the file's meter.

    A file with chords is harmonized by its top line, with a warning; notes outside the 88 keys, a
    file with no notes, or one longer than MAX_QUARTERS are refused (RequestError or MidiError).
    """
    if not data:
        raise RequestError(f"{source}: empty file")
    if is_musicxml(data):  # .mxl archive, or XML text: bounded, and read by music21 in a child process
        data = musicxml_to_midi_bytes(data, source)
    piece = read_midi_bytes(data, source, max_quarters=MAX_QUARTERS)
    if piece.dropped_notes:
        raise RequestError(f"{source}: {piece.dropped_notes} notes lie outside the 88 keys (MIDI 21-108)")
    meter, warnings = playable_tempos(read_meter_bytes(data, source), source)
    most = int(piece_roll(piece.quarters).sum(axis=0).max())
    if most > 1:
        warnings.append(f"{source}: has chords (up to {most} notes at once); its top line is the tune")
    name = tune_name(read_midi_tracks_bytes(data, source, max_quarters=MAX_QUARTERS))
    return Tune(highest_line(piece.quarters), meter, warnings, name)


class MeterIn(BaseModel):
    """Time signatures [(quarter, numerator, denominator)] and tempos [(quarter, beats per minute)]."""

    time_signatures: list[tuple[float, int, int]] = Field(default=[(0.0, 4, 4)], min_length=1, max_length=512)
    tempos: list[tuple[float, float]] = Field(default=[(0.0, 90.0)], min_length=1, max_length=512)
    lead: float = Field(0.0, ge=0, le=64)  # quarters of rests before the music in its first bar (a pickup)

    def meter(self) -> Meter:
        for _, numerator, denominator in self.time_signatures:
            if not 1 <= numerator <= 64 or denominator not in (1, 2, 4, 8, 16, 32):
                raise RequestError(f"meter: time signature {numerator}/{denominator} is not one a bar can have")
        for _, bpm in self.tempos:
            if not MIN_TEMPO_BPM <= bpm <= MAX_TEMPO_BPM:
                raise RequestError(f"meter: tempo {bpm:g} lies outside {MIN_TEMPO_BPM} ... {MAX_TEMPO_BPM}")
        try:
            signatures, tempos = (
                tuple(TimeSignature(*ts) for ts in self.time_signatures),
                tuple(Tempo(*t) for t in self.tempos),
            )
            Meter(signatures, tempos)
        except ValueError:
            raise RequestError("meter: time signatures and tempos must be in order, the first at quarter 0") from None
        try:
            return Meter(signatures, tempos, self.lead)
        except ValueError:
            raise RequestError(f"meter: lead {self.lead:g} is not whole quarters inside the first bar") from None


class Options(BaseModel):
    seed: int = Field(0, ge=0, le=MAX_SEED)
    key: str = Field("", max_length=40)
    guidance: float | None = Field(None, ge=0, le=MAX_GUIDANCE)
    candidates: int | None = Field(None, ge=1, le=MAX_CANDIDATES)


class TuneIn(Options):
    """A tune entered on the page: notes (onset step, offset step, MIDI pitch), 32 steps to a quarter."""

    notes: list[tuple[int, int, int]] = Field(max_length=MAX_QUARTERS * STEPS_PER_QUARTER)
    meter: MeterIn = MeterIn()
    tune_name: str = Field(VOICE_NAMES[0], min_length=1, max_length=80)  # the tune's track in the MIDI file


class PieceIn(BaseModel):
    """A piece the server wrote, sent back to have one bar (counted from 0) written anew."""

    notes: list[tuple[int, int, int, bool]] = Field(max_length=MAX_QUARTERS * STEPS_PER_QUARTER * 8)
    quarters: int = Field(ge=1, le=MAX_QUARTERS)
    meter: MeterIn
    bar: int = Field(ge=0)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    candidates: int | None = Field(None, ge=1, le=MAX_CANDIDATES)
    tune_name: str = Field(VOICE_NAMES[0], min_length=1, max_length=80)


class CompositionIn(BaseModel):
    quarters: int = Field(32, ge=1, le=MAX_QUARTERS)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    key: str = Field("", max_length=40)
    tempo: float = Field(90.0, ge=MIN_TEMPO_BPM, le=MAX_TEMPO_BPM)


def notes_roll(notes: list[tuple], num_quarters: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Quarters [Q, 88, 32] of notes (onset, offset, pitch[, melody]), and those of the melody notes alone."""
    roll = np.zeros((NUM_KEYS, num_quarters * STEPS_PER_QUARTER), dtype=bool)  # [88, Q * 32]
    melody_roll = np.zeros_like(roll)
    for onset, offset, pitch, *marked in notes:
        if not LOWEST_PITCH <= pitch <= HIGHEST_PITCH:
            raise RequestError(f"{what}: pitch {pitch} lies outside the 88 keys (MIDI 21-108)")
        if not 0 <= onset < offset <= num_quarters * STEPS_PER_QUARTER:
            raise RequestError(
                f"{what}: a note from step {onset} to {offset} lies outside 0 ... {num_quarters * STEPS_PER_QUARTER}"
                f" ({num_quarters} quarters of {STEPS_PER_QUARTER} steps; at most {MAX_QUARTERS} quarters)"
            )
        roll[pitch - LOWEST_PITCH, onset:offset] = True
        if marked and marked[0]:
            melody_roll[pitch - LOWEST_PITCH, onset:offset] = True
    return piece_quarters(roll, STEPS_PER_QUARTER), piece_quarters(melody_roll, STEPS_PER_QUARTER)


def passage_of_bar(meter: Meter, num_quarters: int, bar: int) -> tuple[int, int]:
    """Quarters A ... B (from 1, inclusive) that hold bar `bar` (from 0) of the piece."""
    bars = meter.bars(num_quarters)
    if not 0 <= bar < len(bars):
        raise RequestError(f"bar: the piece has bars 0 ... {len(bars) - 1}, got {bar}")
    start, end, _ = bars[bar]
    return max(math.floor(start), 0) + 1, min(math.ceil(end), num_quarters)  # a pickup's bar starts before 0


def score_svg(musicxml: bytes) -> str | None:
    """The score as one SVG drawn by verovio, or None without verovio."""
    try:
        import verovio
    except ImportError:
        return None
    # one toolkit per call (it holds the document it renders); its resources named, since verovio
    # finds them by itself only on the thread that imported it
    toolkit = verovio.toolkit(False)
    toolkit.setResourcePath(str(Path(verovio.__file__).parent / "data"))
    toolkit.setOptions(SCORE_OPTIONS)
    if not toolkit.loadData(musicxml.decode("utf-8")):
        return None
    return toolkit.renderToSVG(1)


def score_available() -> str:
    """ "" when the page can show a score, else what to install."""
    missing = []
    for module in ("music21", "verovio"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    return f"the score needs {' and '.join(missing)}: pip install {' '.join(missing)}" if missing else ""


Send = Callable[[dict], None]  # takes each message of a streamed answer


class Turns:
    """The models' queue: one request at a time, in the order they came, each told how many are ahead of it."""

    def __init__(self):
        self.changed = threading.Condition()
        self.taken = 0  # tickets handed out
        self.serving = 0  # the ticket whose turn it is

    @contextmanager
    def turn(self, waiting: Callable[[int], None] | None = None) -> Iterator[None]:
        """Held while the models are this request's; waiting(n) is called each time n requests are ahead of it."""
        with self.changed:
            ticket, self.taken = self.taken, self.taken + 1
            told = 0
            while (ahead := ticket - self.serving) > 0:
                if waiting is not None and ahead != told:
                    waiting(ahead)
                    told = ahead
                self.changed.wait()
        try:
            yield
        finally:
            with self.changed:
                self.serving += 1
                self.changed.notify_all()


class Progress:
    """What a streamed job tells its client: {"queued": n} while it waits, then {"done": k, "total": Q} as its
    quarters are written. Called with the quarters written, as the model calls' `progress` is."""

    def __init__(self, send: Send, total: int):
        self.send, self.total, self.done = send, total, 0

    def queued(self, ahead: int):
        self.send({"queued": ahead})

    def __call__(self, quarters: int):
        self.done += quarters
        self.send({"done": self.done, "total": self.total})


class Harmonizer:
    """The model pair and the generation defaults, with the queue (`Turns`) by which requests use the models
    one at a time. Each job takes `send`: None for a plain answer, else what takes the messages of its stream."""

    def __init__(self, config: Config):
        self.config = config
        self.vq_vae, self.transformer = load_models(config.models.vq_vae, config.models.transformer, "cpu")
        self.tune_model = None  # free chorales tune first when the tune model is there (as generate.py writes them)
        if config.generate.tune_first and Path(config.models.tune).is_file():
            self.tune_model = load_tune_for(config.models.tune, config.data.normalize_key)
        self.turns = Turns()

    @contextmanager
    def turn(self, send: Send | None, total: int) -> Iterator[Progress | None]:
        """The models, once the requests ahead are done; gives the `progress` of a job of `total` quarters to
        write, which tells `send` (None: tells no one) how far it is."""
        if send is None:
            with self.turns.turn():
                yield None
            return
        progress = Progress(send, total)
        with self.turns.turn(progress.queued):
            progress(0)
            yield progress

    def options(self, seed: int, key: str = "", guidance=None, candidates=None, **more) -> GenerateConfig:
        asked = {"seed": seed, "key": key, "guidance": guidance, "candidates": candidates, **more}
        try:
            return dataclasses.replace(
                self.config.generate, device="cpu", **{k: v for k, v in asked.items() if v is not None}
            )
        except ValueError as error:  # GenerateConfig names the field: "key: ..."
            raise RequestError(str(error)) from None

    def harmonize(self, tune: Tune, options: GenerateConfig, source: str, send: Send | None = None) -> Composition:
        try:
            refuse_mode_change(tune.melody, options.key, source)
        except BachsformerError as error:  # worded for generate.py's --key; here the field is `key`
            raise RequestError(str(error).replace("--key", "key")) from None
        total = (last_note(tune.melody)[1] - 1) // STEPS_PER_QUARTER + 1  # harmonized up to its last note
        with self.turn(send, total) as progress:
            piece = harmonize(
                self.vq_vae,
                self.transformer,
                tune.melody,
                options,
                options.seed,
                self.config.data.normalize_key,
                progress=progress,
            )
        return voiced(piece, options, tune.name)  # four voices, the tune the Soprano, its track named as the tune's

    def regenerate(self, piece: PieceIn, send: Send | None = None) -> tuple[Composition, tuple[int, int]]:
        meter = piece.meter.meter()
        quarters, melody = notes_roll(piece.notes, piece.quarters, "notes")
        first, last = passage_of_bar(meter, piece.quarters, piece.bar)
        options = self.options(piece.seed, candidates=piece.candidates)
        with self.turn(send, last - first + 1) as progress:
            written = regenerate(
                self.vq_vae,
                self.transformer,
                quarters,
                first,
                last,
                options,
                piece.seed,
                self.config.data.normalize_key,
                progress=progress,
            )
        # every other quarter as it came (its voices); a harmonization keeps its tune, the passage's exact Soprano
        voices = keep_tune(written.voices, melody, first, last) if melody.any() else written.voices
        composition = Composition(voices, written.key, melody if melody.any() else None)
        return voiced(composition, options, piece.tune_name), (first, last)

    def compose(self, request: CompositionIn, send: Send | None = None) -> Composition:
        options = self.options(request.seed, request.key, quarters=request.quarters, tempo=request.tempo)
        normalized = self.config.data.normalize_key
        seeds = [request.seed]
        with self.turn(send, request.quarters) as progress:  # as generate.py writes free music: tune first if it can
            if self.tune_model is not None:
                pieces = compose_tune_first(
                    self.vq_vae,
                    self.transformer,
                    self.tune_model,
                    options,
                    seeds,
                    normalize_key=normalized,
                    progress=progress,
                )
            else:
                pieces = compose(
                    self.vq_vae, self.transformer, options, seeds, normalize_key=normalized, progress=progress
                )
        piece = pieces[0]
        return voiced(piece, options)

    def midi(self, piece: Composition, meter: Meter, tune_name: str = VOICE_NAMES[0]) -> bytes:
        """The piece's MIDI file: the one generate.py writes (`compose.piece_midi_bytes`)."""
        return piece_midi_bytes(piece, meter, self.config.generate.program, tune_name)


def wants_stream(request: Request) -> bool:
    """Whether the client asked for a job's answer as JSON lines (Accept: application/x-ndjson)."""
    return NDJSON in request.headers.get("accept", "")


def json_line(content) -> str:
    """One line of a streamed answer: JSON as a plain answer writes it (no newline inside), and a newline."""
    return json.dumps(jsonable_encoder(content), ensure_ascii=False, separators=(",", ":")) + "\n"


def stream(job: Callable[[Send], dict]) -> StreamingResponse:
    """A job run in a thread of its own, answered as JSON lines as its messages come: {"queued": n} and
    {"done": k, "total": Q} (`Progress`), then the job's JSON, or {"detail": ..., "status": ...} if it fails.

    The answer starts with the job's first message, so a request refused before its turn (bad input, as
    checked for a plain answer) is the same 4xx; the job's turn comes whether or not the client still reads.
    """
    messages: queue.Queue = queue.Queue()  # ("message" | "answer" | "error", content), the last an answer or error

    def run():
        try:
            messages.put(("answer", job(lambda message: messages.put(("message", message)))))
        except Exception as error:  # raised where the answer is written: a 4xx, or a 5xx that is logged
            messages.put(("error", error))

    threading.Thread(target=run, name="bachsformer-job", daemon=True).start()
    kind, first = messages.get()
    if kind == "error":
        raise first

    def lines() -> Iterator[str]:
        kind, content = "message", first
        while kind == "message":
            yield json_line(content)
            kind, content = messages.get()
        if kind == "answer":
            yield json_line(content)
        elif isinstance(content, BachsformerError):
            yield json_line({"detail": str(content).splitlines()[0], "status": getattr(content, "status", 400)})
        else:
            yield json_line({"detail": f"the server failed: {type(content).__name__}", "status": 500})
            raise content

    return StreamingResponse(lines(), media_type=NDJSON)


def answer(request: Request, job: Callable[[Send | None], dict]):
    """A job's JSON once it is done, or streamed with its progress if the client asked for that (`stream`)."""
    return stream(job) if wants_stream(request) else job(None)


def harmony_warnings(piece: Composition, source: str) -> list[str]:
    """A harmonization that leaves most of its tune bare says so (`harmonize.thin_harmony_warning`)."""
    if piece.melody is None:
        return []
    warning = thin_harmony_warning(piece.quarters, piece.melody, source, "another seed or more candidates")
    return [warning] if warning else []


def meter_json(meter: Meter) -> dict:
    return {
        "time_signatures": [list(ts) for ts in meter.time_signatures],
        "tempos": [list(t) for t in meter.tempos],
        "lead": meter.lead,
    }


def piece_json(
    harmonizer: Harmonizer, piece: Composition, meter: Meter, title: str, tune_name: str = VOICE_NAMES[0], **more
) -> dict:
    """What the page shows of a piece: its notes, bars, key, MIDI (base64), MusicXML and score."""
    melody = piece.melody if piece.melody is not None else np.zeros_like(piece.quarters)
    notes = [[*map(int, note), True] for note in quarters_to_notes(melody)]
    notes += [[*map(int, note), False] for note in quarters_to_notes(piece.quarters & ~melody)]
    notes.sort(key=lambda note: (note[0], note[2]))
    analysis = piece_analysis(piece)
    musicxml, svg, score_note = None, None, score_available()
    if not score_note:
        if piece.voices is not None:  # the chorale as printed: two staves, four named voices, the numerals
            musicxml = voices_musicxml_bytes(piece.voices, piece.key, meter, title=title, analysis=analysis)
        else:
            musicxml = musicxml_bytes(piece.quarters, piece.key, meter, piece.melody, title=title)
        svg = score_svg(musicxml)
    return {
        "title": title,
        "quarters": len(piece.quarters),
        "steps_per_quarter": STEPS_PER_QUARTER,
        "notes": notes,
        "meter": meter_json(meter.until(len(piece.quarters))),
        "bars": [[start, end] for start, end, _ in meter.bars(len(piece.quarters))],
        "key": str(piece.key),
        "tune_name": tune_name,
        "midi": base64.b64encode(harmonizer.midi(piece, meter, tune_name)).decode("ascii"),
        "musicxml": musicxml.decode("utf-8") if musicxml else None,
        "svg": svg,
        "score_note": score_note,
        "analysis": analysis_json(analysis),
        **more,
    }


def piece_analysis(piece: Composition) -> Analysis | None:
    """The piece's keys, numerals, cadences and (four voices) faults; None for music without harmony."""
    music = as_music(piece.voices if piece.voices is not None else piece.quarters)
    try:
        return analyze(music)
    except NoHarmonyError:
        return None


def analysis_json(analysis: Analysis | None) -> dict | None:
    """What the page shows of an analysis: each beat's chord, the cadences, the faults and what was left out."""
    if analysis is None:
        return None
    chords = [{**chord.as_json(), "uncertain": chord.uncertain} for chord in analysis.chords]
    return {"chords": chords, "cadences": analysis.cadences, "faults": analysis.faults, "notes": analysis.notes}


def tune_json(tune: Tune, name: str) -> dict:
    """The tune for the page's editor, a pickup's rests written out: the notes start `lead` quarters in, the
    meter's changes move with them, and the editor's bar lines fall where the file's do."""
    lead = tune.meter.lead
    shift = round(lead * STEPS_PER_QUARTER)
    notes = quarters_to_notes(tune.melody)
    return {
        "name": name,
        "tune_name": tune.name,
        "quarters": len(tune.melody) + lead,
        "notes": [[int(onset) + shift, int(offset) + shift, int(pitch)] for onset, offset, pitch in notes],
        "meter": {
            "time_signatures": [
                [ts.quarter + lead * (n > 0), *ts[1:]] for n, ts in enumerate(tune.meter.time_signatures)
            ],
            "tempos": [[t.quarter + lead * (n > 0), t.bpm] for n, t in enumerate(tune.meter.tempos)],
            "lead": 0.0,
        },
        "warnings": tune.warnings,
    }


def content_disposition(filename: str) -> str:
    """An attachment's header: an ASCII name for old clients, and the name itself (RFC 6266: filename*)."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def upload_name(file: UploadFile) -> str:
    """The uploaded file's name as errors show it: its last part, printable, at most 80 characters."""
    name = Path((file.filename or "upload").replace("\\", "/")).name or "upload"
    return "".join(c if c.isprintable() else "?" for c in name)[:80]


def read_upload(file: UploadFile) -> tuple[bytes, str]:
    data = file.file.read(MAX_UPLOAD_BYTES + 1)
    name = upload_name(file)
    if len(data) > MAX_UPLOAD_BYTES:
        raise RequestError(f"{name}: over the upload limit of {MAX_UPLOAD_BYTES // 1000} kB", 413)
    return data, name


class UploadTooLarge(Exception):
    """Raised inside the body-limit middleware when a request's body passes MAX_UPLOAD_BYTES."""


class BodyLimit:
    """ASGI middleware: a request whose body is over the limit gets a 413 before it is read whole."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = JSONResponse(
            {"detail": f"the request is over the upload limit of {self.limit // 1000} kB"}, status_code=413
        )
        declared = dict(scope.get("headers", [])).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.limit + 10_000:  # room for the form's other fields
            return await too_large(scope, receive, send)
        received = 0
        over = False

        async def counted_receive():
            nonlocal received, over
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit + 10_000:
                over = True
                raise UploadTooLarge
            return message

        async def watched_send(message):
            # the app may answer the interrupted read itself (FastAPI: 400, "error parsing the body"): 413 instead
            if not over:
                await send(message)
            elif message["type"] == "http.response.start":
                await too_large(scope, receive, send)

        try:
            await self.app(scope, counted_receive, watched_send)
        except UploadTooLarge:
            await too_large(scope, receive, send)


def create_app(config: Config) -> FastAPI:
    """The app, with the model pair of `config.models` loaded once and `config.generate` as defaults."""
    harmonizer = Harmonizer(config)
    # no Swagger UI or ReDoc: both load their scripts from a CDN, and the page works offline; /api lists
    # the calls from /openapi.json with the package's own static/api.html
    app = FastAPI(
        title="bachsformer",
        description="Harmonize a tune, compose a chorale, regenerate a bar.",
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(BodyLimit, limit=MAX_UPLOAD_BYTES)
    app.state.harmonizer = harmonizer  # its queue, for tests that hold a turn

    @app.exception_handler(BachsformerError)
    async def user_error(request: Request, error: BachsformerError):
        status = getattr(error, "status", 400)  # RequestError and ScoreError name theirs
        return JSONResponse({"detail": str(error).splitlines()[0]}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError):
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query", "form"))
        return JSONResponse({"detail": f"{where or 'request'}: {first.get('msg', 'invalid')}"}, status_code=422)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/api", include_in_schema=False)
    def api_page():
        return FileResponse(STATIC / "api.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/info")
    def info():
        """Limits and defaults the page starts with."""
        defaults = config.generate
        return {
            "max_upload_bytes": MAX_UPLOAD_BYTES,
            "max_quarters": MAX_QUARTERS,
            "max_candidates": MAX_CANDIDATES,
            "max_guidance": MAX_GUIDANCE,
            "defaults": {"seed": defaults.seed, "guidance": defaults.guidance, "candidates": defaults.candidates},
            "score_note": score_available(),
        }

    @app.post("/api/harmonize", response_class=Response, responses={200: {"content": {"audio/midi": {}}}})
    def harmonize_file(
        file: Annotated[UploadFile, File(description="a MIDI file or MusicXML score: its top line is the tune")],
        seed: Annotated[int, Form(ge=0, le=MAX_SEED)] = 0,
        key: Annotated[str, Form(max_length=40)] = "",
        guidance: Annotated[float | None, Form(ge=0, le=MAX_GUIDANCE)] = None,
        candidates: Annotated[int | None, Form(ge=1, le=MAX_CANDIDATES)] = None,
    ):
        """The tune of an uploaded file harmonized below it: the MIDI file generate.py writes (four voices, the
        tune's track named as in the file or "Soprano", the file's meter and pickup, the key signature)."""
        data, name = read_upload(file)
        tune = read_tune(data, name)
        options = harmonizer.options(seed, key, guidance, candidates)
        piece = harmonizer.harmonize(tune, options, name)
        warnings = tune.warnings + harmony_warnings(piece, name)
        download = f"{Path(name).stem or 'tune'}-harmonized.mid"
        headers = {"Content-Disposition": content_disposition(download)}
        if warnings:
            headers["X-Bachsformer-Warning"] = " | ".join(warnings).encode("ascii", "replace").decode()
        return Response(harmonizer.midi(piece, tune.meter, tune.name), media_type="audio/midi", headers=headers)

    @app.post("/api/tune")
    def tune_of_file(file: Annotated[UploadFile, File(description="a MIDI file or MusicXML score")]):
        """The tune of an uploaded file, as notes for the page's editor."""
        data, name = read_upload(file)
        return tune_json(read_tune(data, name), name)

    streamed = {200: {"content": {"application/json": {}, NDJSON: {}}}}  # what the page's jobs answer

    @app.post("/api/harmonization", responses=streamed)
    def harmonize_notes(request: TuneIn, http: Request):
        """A tune entered on the page, harmonized: the piece as JSON. With `Accept: application/x-ndjson`, JSON
        lines: {"queued": n} while n requests are ahead, {"done": k, "total": Q} as its Q quarters are written,
        then the piece (or {"detail", "status"} if it fails)."""
        started = time.perf_counter()
        meter = request.meter.meter()
        if not request.notes:
            raise RequestError("notes: the tune has no notes")
        num_quarters = -(-max(offset for _, offset, _ in request.notes) // STEPS_PER_QUARTER)
        if num_quarters > MAX_QUARTERS:
            raise RequestError(f"notes: the tune is {num_quarters} quarters long, over the limit of {MAX_QUARTERS}")
        quarters, _ = notes_roll(request.notes, max(num_quarters, 1), "notes")
        # through the codec as a file: the same trimming, meter and checks as an upload
        tune = read_tune(quarters_to_midi_bytes(quarters, meter=meter), "the tune")
        tune = tune._replace(name=request.tune_name)
        options = harmonizer.options(request.seed, request.key, request.guidance, request.candidates)

        def job(send):
            piece = harmonizer.harmonize(tune, options, "the tune", send)
            seconds = time.perf_counter() - started
            warnings = tune.warnings + harmony_warnings(piece, "the tune")
            return piece_json(
                harmonizer, piece, tune.meter, "Harmonization", tune.name, warnings=warnings, seconds=seconds
            )

        return answer(http, job)

    @app.post("/api/regeneration", responses=streamed)
    def regenerate_bar(request: PieceIn, http: Request):
        """A piece with one bar written anew to fit the music around it (a harmonization keeps its tune).
        Streamed as /api/harmonization is, Q the quarters of the bar."""
        started = time.perf_counter()

        def job(send):
            piece, passage = harmonizer.regenerate(request, send)
            seconds = time.perf_counter() - started
            title = "Harmonization" if piece.melody is not None else "Chorale"
            meter = request.meter.meter()
            return piece_json(harmonizer, piece, meter, title, request.tune_name, passage=passage, seconds=seconds)

        return answer(http, job)

    @app.post("/api/composition", responses=streamed)
    def compose_chorale(request: CompositionIn, http: Request):
        """A chorale written from nothing, in 4/4 at the tempo asked. Streamed as /api/harmonization is."""
        started = time.perf_counter()

        def job(send):
            piece = harmonizer.compose(request, send)
            seconds = time.perf_counter() - started
            return piece_json(harmonizer, piece, Meter.free(request.tempo), "Chorale", seconds=seconds)

        return answer(http, job)

    return app
