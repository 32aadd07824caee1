"""Cross-source duplicates: LLaVA-Critic re-judged other sources' pairs with re-encoded images and
re-spaced text; a build of several sources keeps one copy and counts the rest per source pair."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from critic_data.builders.duplicates import MAX_PIXEL_DISTANCE, CrossSourceIndex, text_key, thumbnail
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
        index.add(text_key("q", "a", "b"), "rlhf_v", original)
        index.seal()
        copies = [reencoded(jpeg(seed), q) for q in (95, 60, 30)] + [reencoded(jpeg(seed), 90, (128, 96))]
        keys = [text_key(" Q ", "B", "a")] * (len(copies) + 1)
        found = index.earlier_copies(keys, [thumbnail(c) for c in copies] + [thumbnail(jpeg(seed + 1000))])
        assert found == ["rlhf_v"] * len(copies) + [None], seed
    assert MAX_PIXEL_DISTANCE < 5.75  # the smallest distance measured between two different test images


def test_text_keys_ignore_spacing_case_and_response_order_but_not_words():
    assert text_key("What is shown?", "A red bus.", "A cat.") == text_key(respaced("What is shown?"), "a cat.", "A RED  BUS.")
    assert text_key("What is shown?", "A red bus.", "A cat.") != text_key("What is shown?", "A red bus.", "A dog.")
    assert text_key("What is shown?", "A red bus.", "A cat.") != text_key("What is seen?", "A red bus.", "A cat.")


@pytest.fixture
def sources(tmp_path):
    """RLHF-V (good rows 0 and 6-11), and LLaVA-Critic rows that re-judge three of them: a copy with a
    re-encoded, resized image and re-spaced, re-cased text (a duplicate), the same text with another
    image, and the same image with another response (both kept), plus two rows of its own."""
    texts = write_rlhf_v(tmp_path / "rlhf_v", n=12)
    question = lambda i: texts[i]["question"].removeprefix("<image>\n")  # noqa: E731
    rows = [
        (respaced(question(0)), respaced(texts[0]["chosen"]), texts[0]["rejected"], reencoded(jpeg(100), 40, (96, 72)), "rlhf_v"),
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
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "llava_critic" / "pairwise" / "train-00000-of-00001.parquet")
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
    assert "| llava_critic | rlhf_v | 1 |" in card and "| rlhf_v | 2 |\n| vlfeedback | 2 |" in card


def test_one_source_alone_keeps_its_content_copies(sources):
    """Content keys are a cross-source rule: one source's own rows are deduplicated exactly, as before."""
    manifest = build(BuildOptions(out=sources / "out", sources=("llava_critic",), inputs={"llava_critic": sources / "llava_critic"}))
    assert manifest["sources"]["llava_critic"]["counts"]["pairs_kept"] == 5
