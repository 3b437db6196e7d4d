"""How much sentiment a pre-trained language model's states carry: a logistic regression on the
forward model's pooled states (last, mean and max over each text) of an `lstm train sentiment
--pretrain-minutes` run, trained on the training part and scored on the test part of the fixed
split. Also prints how many tokens the run's pre-training corpus holds.

    .venv/bin/python scripts/sentiment_probe.py runs/rt-lstm-pretrained --dataset rt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from lstm.data.sentiment import encode_texts, load_movie_reviews, split_dataset
from lstm.models.language_model import LMConfig, RecurrentLM
from lstm.tasks.sentiment import load_pretrained, pretraining_corpus, review_stream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run directory with lm-forward/")
    parser.add_argument("--dataset", choices=["rt", "imdb"], default="rt")
    parser.add_argument("--corpus", default="imdb", help="the run's --pretrain-corpus")
    args = parser.parse_args()
    torch.set_num_threads(1)
    vocab, forward, _, model = load_pretrained(args.run)
    lm = RecurrentLM(LMConfig.from_json(model))
    lm.load_state_dict(forward)
    lm.eval()
    split = split_dataset(load_movie_reviews(args.dataset))

    @torch.no_grad()
    def pooled(texts: list[str]) -> np.ndarray:
        rows = []
        for ids in encode_texts(vocab, texts, 400):
            h = lm.features(ids.view(1, -1))[0][0]  # (T, H)
            rows.append(torch.cat([h[-1], h.mean(0), h.max(0).values]).numpy())
        return np.stack(rows)

    train, test = pooled(split.train.texts), pooled(split.test.texts)
    result = {"run": args.run, "dataset": args.dataset}
    for C in (0.1, 1.0):
        clf = LogisticRegression(C=C, max_iter=2000).fit(train, split.train.labels)
        result[f"probe_accuracy_C={C:g}"] = float((clf.predict(test) == split.test.labels).mean())
    corpus = pretraining_corpus(args.corpus, split)
    result["corpus_texts"] = len(corpus)
    result["corpus_tokens"] = len(review_stream(vocab, corpus))
    print(json.dumps(result, indent=1))
    Path(args.run, "probe.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
