"""A few seconds of music made here, as a WAV file: the demo's tracks, with nothing downloaded.

A chord progression (I-vi-IV-V) played as a soft arpeggio over a quiet pad, 16-bit mono PCM. The key
follows the ISRC, so two demo tracks differ. Pure Python (math and array), about half a second of CPU
per track, cached: the stand-in renders each track once, off the event loop.
"""

from __future__ import annotations

import array
import hashlib
import math
import struct
from functools import lru_cache

RATE = 22_050
SECONDS_PER_CHORD = 2.0
PROGRESSION = ((0, 4, 7), (9, 12, 16), (5, 9, 12), (7, 11, 14))  # I vi IV V, semitones above the root
ARPEGGIO = (0, 1, 2, 1)  # chord tones in order, one per eighth of a chord
LENGTH_SECONDS = int(SECONDS_PER_CHORD * len(PROGRESSION) * 2)  # the progression twice: 16 s


def _frequency(semitones_from_a4: int) -> float:
    return 440.0 * 2 ** (semitones_from_a4 / 12)


def _add_note(out: array.array[float], start: float, length: float, freq: float, gain: float, decay: float) -> None:
    first, count = int(start * RATE), int(length * RATE)
    step = 2 * math.pi * freq / RATE
    for i in range(min(count, len(out) - first)):
        envelope = min(1.0, i / 220) * math.exp(-decay * i / RATE)  # 10 ms attack, then an exponential fade
        phase = step * i
        out[first + i] += gain * envelope * (math.sin(phase) + 0.25 * math.sin(2 * phase))


@lru_cache(maxsize=8)
def track_wav(isrc: str) -> bytes:
    """The WAV bytes for one ISRC (deterministic)."""
    root = -21 + hashlib.sha256(isrc.encode()).digest()[0] % 7  # a key between C3-ish and F#3-ish
    samples = array.array("f", bytes(4 * RATE * LENGTH_SECONDS))
    eighth = SECONDS_PER_CHORD / len(ARPEGGIO) / 2
    for bar in range(LENGTH_SECONDS // int(SECONDS_PER_CHORD)):
        chord = PROGRESSION[bar % len(PROGRESSION)]
        start = bar * SECONDS_PER_CHORD
        for tone in chord:  # the pad: the whole chord, low and soft
            _add_note(samples, start, SECONDS_PER_CHORD, _frequency(root + tone - 12), 0.11, 1.2)
        for step in range(8):  # the arpeggio: eighth notes, an octave up on the second half
            tone = chord[ARPEGGIO[step % 4]] + (12 if step >= 4 else 0)
            _add_note(samples, start + step * eighth, eighth * 2.5, _frequency(root + tone + 12), 0.3, 4.0)
    pcm = array.array("h", (max(-32767, min(32767, int(value * 32767))) for value in samples))
    data = pcm.tobytes()  # little-endian on every platform we run on (x86-64, arm64)
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, RATE, RATE * 2, 2, 16)
    return header + b"data" + struct.pack("<I", len(data)) + data
