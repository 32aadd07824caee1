"""Cross-source duplicates: LLaVA-Critic re-judged other sources' pairs with re-encoded images and
re-spaced text; a build of several sources keeps one copy and counts the rest per source pair."""

from __future__ import annotations

import io

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from critic_data.builders import duplicates
from critic_data.builders.duplicates import MAX_PIXEL_DISTANCE, CrossSourceIndex, content_key, thumbnail
from critic_data.builders.options import BuildOptions
from critic_data.builders.pipeline import build
from tests.snapshots import critic_prompt, jpeg, write_rlhf_v


def reencoded(data: bytes, quality: int, size: tuple[int, int] | None = None) -> bytes:
    image = Image.open(io.BytesIO(data))
    image = image.resize(size) if size else image
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def respaced(text: str) -> str:
    return "  " + text.replace(" ", "  \n ").upper() + " \t"


def test_a_reencoded_image_keeps_its_thumbnail_and_another_image_does_not():
    for seed in range(40):
        original = thumbnail(jpeg(seed))
        index = CrossSourceIndex()
        index.add(content_key("q", "a", "b")[0], "rlhf_v", original, 1)
        index.seal()
        copies = [reencoded(jpeg(seed), q) for q in (95, 60, 30)] + [reencoded(jpeg(seed), 90, (128, 96))]
        keys = [content_key(" Q ", "B", "a")[0]] * (len(copies) + 1)
        found = index.earlier_copies(keys, [thumbnail(c) for c in copies] + [thumbnail(jpeg(seed + 1000))])
        assert found == [("rlhf_v", 1)] * len(copies) + [None], seed
    assert MAX_PIXEL_DISTANCE < 5.75  # the smallest distance measured between two different test images


def text_key(question: str, first: str, second: str) -> int:
    return content_key(question, first, second)[0]


def test_text_keys_ignore_spacing_case_and_response_order_but_not_words():
    assert text_key("What is shown?", "A red bus.", "A cat.") == text_key(respaced("What is shown?"),
                                                                          "a cat.", "A RED  BUS.")
    assert text_key("What is shown?", "A red bus.", "A cat.") != text_key("What is shown?", "A red bus.", "A dog.")
    assert text_key("What is shown?", "A red bus.", "A cat.") != text_key("What is seen?", "A red bus.", "A cat.")


def test_the_preferred_response_of_a_content_key_survives_copying_and_tells_the_other_label_apart():
    kept = content_key("What is shown?", "A red bus.", "A cat.")[1]
    assert content_key(respaced("What is shown?"), "a red  BUS.", " A cat.")[1] == kept  # the same label, re-spaced
    assert content_key("What is shown?", "A cat.", "A red bus.")[1] != kept  # the opposite preference
    assert content_key("What is shown?", "A red bus.", "A cat.", tie=True)[1] not in (kept, 3 - kept)  # a tie


@pytest.fixture
def sources(tmp_path):
    """RLHF-V (good rows 0 and 6-11), and LLaVA-Critic rows that re-judge three of them: a copy with a
    re-encoded, resized image and re-spaced, re-cased text (a duplicate), the same text with another
    image, and the same image with another response (both kept), plus two rows of its own."""
    texts = write_rlhf_v(tmp_path / "rlhf_v", n=12)
    question = lambda i: texts[i]["question"].removeprefix("<image>\n")  # noqa: E731
    rows = [
        (respaced(question(0)), respaced(texts[0]["chosen"]), texts[0]["rejected"], reencoded(jpeg(100), 40, (96, 72)),
         "rlhf_v"),
        (question(6), texts[6]["chosen"], texts[6]["rejected"], jpeg(777), "rlhf_v"),
        (question(7), texts[7]["chosen"], "Another response entirely.", jpeg(107), "rlhf_v"),
        ("What is new here?", "Something.", "Nothing.", jpeg(778), "vlfeedback"),
        ("And here?", "This.", "That.", jpeg(779), ""),
    ]
    records = [{"id": f"rlhf_v_{i}" if origin == "rlhf_v" else f"vlfeedback_{i}", "source": origin,
                "conversations": [{"from": "human", "value": critic_prompt(q, a, b, i % 3)},
                                  {"from": "gpt", "value": "The better response: [first]"}],
                "image": {"bytes": image, "path": None}} for i, (q, a, b, image, origin) in enumerate(rows)]
    (tmp_path / "llava_critic" / "pairwise").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(records),
                   tmp_path / "llava_critic" / "pairwise" / "train-00000-of-00001.parquet")
    return tmp_path


def test_a_reencoded_respaced_copy_in_a_later_source_is_one_duplicate(sources):
    inputs = {"rlhf_v": sources / "rlhf_v", "llava_critic": sources / "llava_critic"}
    manifest = build(BuildOptions(out=sources / "out", sources=("rlhf_v", "llava_critic"), inputs=inputs))
    critic = manifest["sources"]["llava_critic"]
    assert critic["counts"]["duplicates_dropped"] == 1 and critic["duplicates_of"] == {"rlhf_v": 1}
    assert critic["counts"]["pairs_kept"] == 4
    # the source column names where a re-judged pair comes from; an empty one falls back to the id's prefix
    assert critic["kept_by_origin"] == {"rlhf_v": 2, "vlfeedback": 2}
    assert manifest["sources"]["rlhf_v"]["duplicates_of"] == {}
    card = (sources / "out" / "README.md").read_text()
    assert "| llava_critic | rlhf_v | 1 | 0 |" in card and "| rlhf_v | 2 |\n| vlfeedback | 2 |" in card


def test_one_source_alone_keeps_its_content_copies(sources):
    """Content keys are a cross-source rule: one source's own rows are deduplicated exactly, as before."""
    manifest = build(BuildOptions(out=sources / "out", sources=("llava_critic",),
                                  inputs={"llava_critic": sources / "llava_critic"}))
    assert manifest["sources"]["llava_critic"]["counts"]["pairs_kept"] == 5


class PolarsJoinIndex:
    """The search as it was before it was vectorised, kept as the oracle of `CrossSourceIndex`: a
    polars join on the text key, then each joined pair of thumbnails compared in Python (quadratic
    when many pairs share one text)."""

    def __init__(self) -> None:
        self._index, self._pending = None, []

    def add(self, key: int, source: str, image: bytes | None, preferred: int) -> None:
        if image is not None:
            self._pending.append((key, source, image, preferred))

    def seal(self) -> None:
        if self._pending:
            schema = {"text_key": pl.UInt64, "source": pl.String, "thumbnail": pl.Binary, "preferred": pl.Int8}
            added = pl.DataFrame(self._pending, schema=schema, orient="row")
            self._index = added if self._index is None else pl.concat([self._index, added]).rechunk()
            self._pending = []

    def earlier_copies(self, keys: list[int], images: list[bytes | None]) -> list[tuple[str, int] | None]:
        found = [None] * len(keys)
        if self._index is None or not keys:
            return found
        candidates = pl.DataFrame({"row": range(len(keys)), "text_key": keys},
                                  schema={"row": pl.UInt32, "text_key": pl.UInt64})
        joined = candidates.join(self._index, on="text_key", how="inner").sort("row", maintain_order=True)
        for row, source, earlier, preferred in joined.select("row", "source", "thumbnail", "preferred").iter_rows():
            image = images[row]
            if found[row] is None and image is not None and _distance(image, earlier) <= MAX_PIXEL_DISTANCE:
                found[row] = (source, preferred)
        return found


def _distance(a: bytes, b: bytes) -> float:
    return float(np.abs(np.frombuffer(a, np.uint8).astype(np.int16) - np.frombuffer(b, np.uint8)).mean())


def _near(rng: np.random.Generator, base: np.ndarray) -> bytes:
    """A thumbnail a few grey levels from `base`: two of them are within MAX_PIXEL_DISTANCE or not."""
    spread = int(rng.integers(1, 8))
    return np.clip(base.astype(np.int16) + rng.integers(-spread, spread + 1, 64), 0, 255).astype(np.uint8).tobytes()


@pytest.mark.parametrize("seed", range(4))
def test_the_vectorised_search_finds_what_the_pairwise_search_found(seed, monkeypatch):
    """Random builds of three sources: few text keys shared by many pairs, thumbnails that are copies
    of a few images (some just within the distance, some just past it), images that cannot be read;
    the comparisons made all at once or a few at a time."""
    if seed % 2:
        monkeypatch.setattr(duplicates, "_COMPARED_AT_ONCE", 50)
    rng = np.random.default_rng(seed)
    bases = rng.integers(0, 256, (40, 64), dtype=np.uint8)
    bases[-1] = 128  # a flat image: its copies all have about its brightness
    new, old = CrossSourceIndex(), PolarsJoinIndex()

    def pairs(n):
        keys = [int(k) for k in rng.integers(0, 8, n, dtype=np.uint64) * np.uint64(2**61 + 7)]  # large keys too
        images = [None if rng.random() < 0.05 else _near(rng, bases[rng.integers(len(bases))]) for _ in range(n)]
        return keys, images, [int(p) for p in rng.integers(0, 3, n)]

    for source in ("vlfeedback", "rlhf_v", "llava_critic"):
        keys, images, preferred = pairs(int(rng.integers(1, 400)))
        assert new.earlier_copies(keys, images) == old.earlier_copies(keys, images)
        for key, image, label in zip(keys, images, preferred):
            new.add(key, source, image, label)
            old.add(key, source, image, label)
        new.seal()
        old.seal()
    keys, images, _ = pairs(1000)
    found = new.earlier_copies(keys, images)
    assert found == old.earlier_copies(keys, images)
    assert sum(copy is not None for copy in found) > 100 and sum(copy is None for copy in found) > 100
    assert len({copy for copy in found if copy}) > 6  # copies found in every source, with every label


def test_thumbnails_match_up_to_the_distance_exactly():
    index = CrossSourceIndex()
    flat = np.full(64, 100, np.uint8)
    index.add(7, "rlhf_v", flat.tobytes(), 2)
    index.seal()
    within = flat + 4  # a mean distance of 4.0
    past = within.copy()
    past[0] += 1  # 4.016
    darker = flat - 4
    assert index.earlier_copies([7, 7, 7, 8], [within.tobytes(), past.tobytes(), darker.tobytes(), flat.tobytes()]) == [
        ("rlhf_v", 2), None, ("rlhf_v", 2), None]


def test_the_copy_added_first_is_the_one_found():
    index = CrossSourceIndex()
    flat = np.full(64, 100, np.uint8)
    index.add(7, "rlhf_v", (flat + 3).tobytes(), 2)  # close to the query, but not the first added
    index.seal()
    index.add(7, "llava_rlhf", flat.tobytes(), 1)
    index.seal()
    assert index.earlier_copies([7], [(flat + 1).tobytes()]) == [("rlhf_v", 2)]


def _write_critic(folder, rows) -> None:
    """LLaVA-Critic rows (question, first response, second response, image, verdict)."""
    records = [{"id": f"rlhf_v_{i}", "source": "rlhf_v", "image": {"bytes": image, "path": None},
                "conversations": [{"from": "human", "value": critic_prompt(q, a, b, i % 3)},
                                  {"from": "gpt", "value": verdict}]}
               for i, (q, a, b, image, verdict) in enumerate(rows)]
    (folder / "pairwise").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(records), folder / "pairwise" / "train-00000-of-00001.parquet")


def test_a_copy_with_the_opposite_label_is_a_conflict_counted_apart_and_the_earlier_label_is_kept(tmp_path):
    texts = write_rlhf_v(tmp_path / "rlhf_v", n=12)
    question = lambda i: texts[i]["question"].removeprefix("<image>\n")  # noqa: E731
    first, second = "The better response: [first]", "The better response: [second]"
    _write_critic(tmp_path / "llava_critic", [
        (respaced(question(0)), texts[0]["chosen"], texts[0]["rejected"], reencoded(jpeg(100), 60), first),  # agrees
        # prefers the rejected
        (question(6), texts[6]["rejected"], texts[6]["chosen"], reencoded(jpeg(106), 60), first),
        (respaced(question(7)), texts[7]["chosen"], texts[7]["rejected"], reencoded(jpeg(107), 60), second),  # too
        ("What is new here?", "Something.", "Nothing.", jpeg(778), first),  # its own pair, then an exact copy of it
        ("What is new here?", "Something.", "Nothing.", jpeg(778), second),  # with the other label
    ])
    inputs = {"rlhf_v": tmp_path / "rlhf_v", "llava_critic": tmp_path / "llava_critic"}
    manifest = build(BuildOptions(out=tmp_path / "out", sources=tuple(inputs), inputs=inputs, test_size=0.0))
    critic = manifest["sources"]["llava_critic"]
    assert critic["duplicates_of"] == {"llava_critic": 1, "rlhf_v": 3}
    assert critic["conflicting_duplicates_of"] == {"llava_critic": 1, "rlhf_v": 2}
    assert critic["counts"]["duplicates_dropped"] == 4 and critic["counts"]["pairs_kept"] == 1
    assert manifest["sources"]["rlhf_v"]["conflicting_duplicates_of"] == {}
    # the data holds RLHF-V's labels (chosen better), and LLaVA-Critic's own pair with its first label
    rows = pq.read_table(tmp_path / "out" / "data" / "train-00000-of-00001.parquet").to_pylist()
    better = {row["question"]: row[f"response_{row['answer']}"] for row in rows}
    assert all(better[question(i)] == texts[i]["chosen"] for i in (0, 6, 7))
    assert better["What is new here?"] == "Something."
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| llava_critic | rlhf_v | 3 | 2 |" in card and "| llava_critic | llava_critic | 1 | 1 |" in card
    assert "The copy kept first keeps its label: the earlier source's in build order" in " ".join(card.split())
