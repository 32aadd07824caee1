"""Model cards for trained critics: what a checkpoint folder needs to be published as a model repo.

`critic-data train` writes the card into its output folder and into every checkpoint folder,
so any checkpoint (early and mid-run ones matter: critic quality drops late in training) can be
pushed as it is with `critic-data push`. The template ships as package data
(`templates/model_card.md`); metadata goes through huggingface_hub's card classes.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from critic_data.cards import LLAVA_CRITIC_CITATION, LLAVA_CRITIC_R1_CITATION

TRAINING_CITATIONS = """@article{shao2024deepseekmath,
  title={DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models},
  author={Shao, Zhihong and Wang, Peiyi and Zhu, Qihao and Xu, Runxin and Song, Junxiao and Zhang, Mingchuan and Li, \
Y. K. and Wu, Y. and Guo, Daya},
  journal={arXiv preprint arXiv:2402.03300},
  year={2024}
}

@misc{vonwerra2020trl,
  title={{TRL: Transformers Reinforcement Learning}},
  author={von Werra, Leandro and Belkada, Younes and Tunstall, Lewis and Beeching, Edward and Thrush, Tristan and \
Lambert, Nathan and Huang, Shengyi and Rasul, Kashif and Gallou{\\'e}dec, Quentin},
  year={2020},
  howpublished={\\url{https://github.com/huggingface/trl}}
}"""

TAGS = ["critic", "reward-model", "multimodal", "grpo", "trl", "llava-critic-r1", "critic-data"]


def render_model_card(info: dict, step: int | None = None) -> str:
    """The README.md of a trained critic folder, from the facts `critic-data train` collected.

    `info` keys: model_name, base_model, base_model_revision, base_model_on_hub, base_model_fingerprint,
    base_model_fingerprint_method, base_model_license, pixels (training and base (min, max) pixel bounds),
    dataset (name, on_hub, revision, fingerprint, fingerprint_method, license, rows_used, rows_dropped,
    max_prompt_length, prompt_length_unit), recipe (name, shipped, file, fingerprint), rewards
    [(name, weight)], hyperparameters, command, versions, max_steps. None of them names a local path:
    a local base model or dataset goes by its folder's name.
    """
    dataset = info["dataset"]
    # Hub metadata may only name Hub repos: a local path as base_model or dataset fails validation.
    data = ModelCardData(
        base_model=info["base_model"] if info["base_model_on_hub"] else None,
        datasets=[dataset["name"]] if dataset["on_hub"] else None,
        license=info.get("base_model_license"),
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        tags=TAGS,
    )
    card = ModelCard.from_template(
        data,
        template_str=files("critic_data.cards").joinpath("templates/model_card.md").read_text(),
        model_name=info["model_name"],
        base_model=info["base_model"],
        base_model_revision=info.get("base_model_revision"),
        base_model_on_hub=info["base_model_on_hub"],
        base_model_fingerprint=info.get("base_model_fingerprint"),
        base_model_fingerprint_method=info.get("base_model_fingerprint_method"),
        pixels=info["pixels"],
        dataset=dataset,
        recipe=info["recipe"],
        rewards=[{"name": name, "weight": weight} for name, weight in info["rewards"]],
        hyperparameters=info["hyperparameters"],
        command=info["command"],
        versions=info["versions"],
        step=step,
        max_steps=info.get("max_steps"),
        citations="\n\n".join([LLAVA_CRITIC_CITATION, LLAVA_CRITIC_R1_CITATION, TRAINING_CITATIONS]),
    )
    return str(card)


def write_model_card(folder: Path, info: dict, step: int | None = None) -> Path:
    path = Path(folder) / "README.md"
    path.write_text(render_model_card(info, step=step), encoding="utf-8")
    return path
