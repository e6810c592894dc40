"""ELMo's biLSTM (clipped TF-style cells, both directions in one loop) against a plain torch.nn.LSTM
biLM of the same size: training tokens/s of forward + backward through the two directions' LSTMs.

The peer is PyTorch's own kernel: per direction one nn.LSTM(P, C, proj_size=P, num_layers) (no
clipping, no residual), the backward one over the reversed sequence. Both sides get the same token
vectors and a sum-of-outputs loss, so the time is the recurrent part that differs. Run side by side:

    python bench/bench_elmo.py --preset elmo-cpu --batch 32 --steps 20 --rounds 3 [--device cuda]

`--token-encoder` times the character CNN instead: forward + backward over every token of a batch of
Zipf-distributed words (each word a fixed random spelling) against over its distinct spellings only,
which is what `ElmoBackbone.encode_tokens` does.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from lmforge.elmo_config import ElmoConfig
from lmforge.models.elmo import ElmoBackbone


class PlainBiLM(nn.Module):
    def __init__(self, config: ElmoConfig) -> None:
        super().__init__()
        P, C = config.projection_dim, config.lstm_dim
        self.directions = nn.ModuleList(nn.LSTM(P, C, proj_size=P, num_layers=config.num_layers, batch_first=True)
                                        for _ in range(2))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        forward = self.directions[0](tokens)[0]
        backward = self.directions[1](tokens.flip(1))[0]
        return torch.cat([forward, backward.flip(1)], dim=-1)


class OursBiLM(nn.Module):
    def __init__(self, config: ElmoConfig) -> None:
        super().__init__()
        self.layers = ElmoBackbone(config).layers

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = torch.stack([tokens, tokens.flip(1)])  # (2, B, T, P)
        for index, layer in enumerate(self.layers):
            y = layer(x)
            x = y + x if index > 0 else y
        return torch.cat([x[0], x[1].flip(1)], dim=-1)


def tokens_per_second(model: nn.Module, tokens: torch.Tensor, steps: int) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    for step in range(steps + 2):  # two warm-up steps
        if step == 2:
            if tokens.is_cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
        optimizer.zero_grad()
        model(tokens).float().pow(2).mean().backward()
        optimizer.step()
    if tokens.is_cuda:
        torch.cuda.synchronize()
    return steps * tokens.shape[0] * tokens.shape[1] / (time.perf_counter() - start)


def token_encoder_ms(config: ElmoConfig, batch: int, length: int, steps: int) -> None:
    backbone = ElmoBackbone(config)
    generator = torch.Generator().manual_seed(0)
    W = config.max_characters_per_token
    spelling = torch.randint(1, config.n_characters, (config.vocab_size, W), generator=generator)
    letters = torch.randint(3, 12, (config.vocab_size, 1), generator=generator)
    spelling[torch.arange(W) >= letters] = 0
    ranks = torch.arange(1, config.vocab_size + 1, dtype=torch.float)
    words = torch.multinomial(ranks.pow(-1.1), batch * length, replacement=True, generator=generator)
    chars = spelling[words]  # (N, W)

    def every(c: torch.Tensor) -> torch.Tensor:
        return backbone.token_encoder(c)

    def distinct(c: torch.Tensor) -> torch.Tensor:  # lmforge's own path
        return backbone.encode_tokens(None, c[None])

    print(f"{config.vocab_size} Zipf(1.1) words, {words.unique().numel()} distinct of {words.numel()} tokens")
    for name, encode in (("every token", every), ("distinct spellings", distinct)) * 2:
        for step in range(steps + 2):  # two warm-up steps
            if step == 2:
                start = time.perf_counter()
            encode(chars).pow(2).mean().backward()
        print(f"  {name:20s} {(time.perf_counter() - start) / steps * 1000:8.1f} ms forward + backward")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="elmo-cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=20, help="tokens per sequence (bilm-tf unroll_steps)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the two models alternating (median kept)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--token-encoder", action="store_true", help="time the character CNN (see above)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.token_encoder:
        return token_encoder_ms(ElmoConfig.from_name(args.preset, vocab_size=33282), args.batch, 64, args.steps)
    config = ElmoConfig.from_name(args.preset, dropout=0.0)
    torch.manual_seed(0)
    tokens = torch.randn(args.batch, args.length, config.projection_dim, device=args.device)
    models = {"nn.LSTM biLM": PlainBiLM(config).to(args.device), "lmforge ELMo biLSTM": OursBiLM(config).to(args.device)}
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):  # alternating, so a busy machine slows both alike
        for name, model in models.items():
            rates[name].append(tokens_per_second(model, tokens, args.steps))
    results = {name: sorted(values)[len(values) // 2] for name, values in rates.items()}
    peer = results["nn.LSTM biLM"]
    print(f"{args.preset} cells {config.lstm_dim} proj {config.projection_dim} batch {args.batch} x {args.length} "
          f"on {args.device} ({torch.get_num_threads()} threads)")
    for name, rate in results.items():
        print(f"  {name:22s} {rate:10.0f} tokens/s  {rate / peer:.2f}x")


if __name__ == "__main__":
    main()
