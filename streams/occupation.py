"""Occupations as a short code list instead of free text (docs/domain.md "Occupations").

Publishers send what the enrolling officer typed ("nelayan", "Petani sawit", "guru ngaji, NIK 6472…"). Only the
code leaves the worker and the sink: the free text can hold anything, personal data included. The list follows
the groups the province's vulnerable-worker programme names (farmers, fishermen, religious teachers, traditional
healers…); what matches none is ``OTHER``."""
from __future__ import annotations

import re

# code -> words that name it (matched as whole words or word starts, in this order: the first code wins)
CODES: dict[str, tuple[str, ...]] = {
    "FISHER": ("nelayan", "penangkap ikan", "pembudidaya ikan", "petambak"),
    "FARMER": ("petani", "pekebun", "peternak", "buruh tani", "penyadap"),
    "RELIGIOUS_WORKER": ("guru ngaji", "marbot", "ustadz", "ustaz", "imam", "muadzin", "penjaga masjid", "pendeta",
                         "penyuluh agama"),
    "TRADITIONAL_HEALER": ("pengobat tradisional", "dukun", "tabib", "paraji"),
    "TEACHER": ("guru", "pengajar", "tutor"),
    "HEALTH_WORKER": ("tenaga kesehatan", "perawat", "bidan", "kader posyandu"),
    "CIVIL_SERVICE_CONTRACT": ("honorer", "tenaga kontrak", "pegawai tidak tetap", "satpam kantor", "pengemudi dinas",
                               "petugas kebersihan"),
    "TRADER": ("pedagang", "penjual", "warung"),
    "DRIVER": ("ojek", "sopir", "supir", "pengemudi", "kurir"),
    "CRAFT_AND_TRADES": ("penganyam", "pengrajin", "perajin", "penjahit", "tukang", "montir", "bengkel"),
    "DAY_LABOURER": ("buruh harian", "buruh", "kuli"),
    "WASTE_PICKER": ("pemulung", "pengepul"),
}
OTHER = "OTHER"
_PATTERNS = [(code, re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")", re.IGNORECASE))
             for code, words in CODES.items()]


def normalise(text: str) -> str:
    """The code of a free-text occupation; ``OTHER`` when no word of the list is in it."""
    for code, pattern in _PATTERNS:
        if pattern.search(text):
            return code
    return OTHER
