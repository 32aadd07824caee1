"""Dataset and model cards: rendered from what a build or a training run recorded, never typed by hand.

- dataset_card.py: the README.md of a built dataset, from its manifest (build.json) and the
  figures counted from its data files (statistics.py), with its charts;
- model_card.py: the README.md of a trained checkpoint;
- statistics.py: a built dataset's figures (polars), for the card and `critic-data inspect`;
- charts.py: their charts, and those of eval and best-of-n runs (matplotlib).
The citations every card carries are declared here, once.
"""

LLAVA_CRITIC_CITATION = """@article{xiong2024llavacritic,
  title={LLaVA-Critic: Learning to Evaluate Multimodal Models},
  author={Xiong, Tianyi and Wang, Xiyao and Guo, Dong and Ye, Qinghao and Fan, Haoqi and Gu, Quanquan and Huang, Heng \
and Li, Chunyuan},
  journal={arXiv preprint arXiv:2410.02712},
  year={2024}
}"""
LLAVA_CRITIC_R1_CITATION = """@article{wang2025llavacriticr1,
  title={LLaVA-Critic-R1: Your Critic Model is Secretly a Strong Policy Model},
  author={Wang, Xiyao and Li, Chunyuan and Yang, Jianwei and Zhang, Kai and Liu, Bo and Xiong, Tianyi and Huang, \
Furong},
  journal={arXiv preprint arXiv:2509.00676},
  year={2025}
}"""
