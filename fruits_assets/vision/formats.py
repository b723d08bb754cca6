"""What a file is, from its first bytes, when it is not a photo this pipeline decodes.

Pillow names the photo formats it opens; the files it cannot open are either media
or documents of a known kind (a video, a PDF, a Photoshop file: `unsupported_format`,
named) or anything else (`not_an_image`). Known kinds are recognized by their
signatures only, never by their extension, and nothing here parses past them.
"""

from __future__ import annotations

# ISO base media brands that the HEIF and AVIF decoders open: not to be named here.
PHOTO_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis", b"mif2"}
SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "PDF document"),
    (b"8BPS", "Photoshop document (PSD)"),
    (b"%!PS", "PostScript or EPS document"),
    (b"\xc5\xd0\xd3\xc6", "EPS document"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000 image"),
    (b"\xff\x4f\xff\x51", "JPEG 2000 codestream"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL image"),
    (b"\xff\x0a", "JPEG XL image"),
    (b"\x1a\x45\xdf\xa3", "Matroska or WebM video"),
    (b"ID3", "MP3 audio"),
    (b"OggS", "Ogg media"),
    (b"fLaC", "FLAC audio"),
    (b"PK\x03\x04", "ZIP archive"),
    (b"\x1f\x8b", "gzip archive"),
    (b"Rar!", "RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "OLE compound file (Thumbs.db, an Office document)"),
    (b"\x00\x00\x01\x00", "Windows icon"),
)
RIFF_KINDS = {b"AVI ": "AVI video", b"WAVE": "WAV audio"}


def unsupported_kind(content: bytes) -> str | None:
    """The name of a known non-photo format that `content` starts as, or None."""
    head = content[:64]
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in PHOTO_BRANDS:
            return None
        return "QuickTime video" if brand == b"qt  " else f"MP4 or other ISO media ({brand.decode('latin-1').strip()})"
    if head.startswith(b"RIFF") and head[8:12] in RIFF_KINDS:
        return RIFF_KINDS[head[8:12]]
    for signature, kind in SIGNATURES:
        if head.startswith(signature):
            return kind
    text = content[:1024].lstrip().lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "SVG vector image"
    return None


def cut_short(content: bytes) -> bool:
    """Whether a container says it is longer than the bytes are: a RIFF (WebP) or ISO media (HEIF, AVIF) file
    whose declared sizes run past the end, as an interrupted upload leaves it."""
    if content[:4] == b"RIFF" and len(content) >= 8:
        return len(content) < int.from_bytes(content[4:8], "little") + 8
    if content[4:8] == b"ftyp":
        at = 0
        while at + 8 <= len(content):
            size = int.from_bytes(content[at : at + 4], "big")
            if size == 1 and at + 16 <= len(content):
                size = int.from_bytes(content[at + 8 : at + 16], "big")
            if size < 8:
                return False  # a box "to the end of the file", or not ISO media after all
            at += size
        return at > len(content)
    return False
