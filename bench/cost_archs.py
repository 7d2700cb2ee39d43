"""The real architectures of the models the pipeline runs, with random weights (torch modules).

Imported only inside the cost-models venv (bench/cost_models.py builds it and runs this file
there): the main environment has no torch. Every module is written here from its published
description — layer counts, channels, resolutions — not copied from the authors' code; the
docstrings name the source. Weights are random: the point is the cost (operators, shapes,
multiply-adds, bytes of weights), not the pixels.

`python bench/cost_archs.py NAME OUT.onnx` exports one model with the signature of the file
the pipeline loads (FaceFusion's exports); `--module-macs NAME` prints its multiply-adds
counted by torch hooks (a second count for bench/cost_models.count_macs).
"""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F
from torch import nn

LRELU = 0.2


def lrelu() -> nn.Module:
    return nn.LeakyReLU(LRELU)


def conv(cin: int, cout: int, k: int = 3, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2, bias=bias)


# ---------------------------------------------------------------------------------------------
# inswapper_128 (insightface). No published architecture: the structure is read off the
# published ONNX file's graph (its operators and initializer shapes), as ReSwapper documents it:
# a 4-conv encoder to 1024×32×32, six residual style blocks of two 3×3 1024→1024 convolutions,
# each followed by instance norm and an AdaIN affine from the 512-d identity, a 2× bilinear
# upsampling decoder, tanh, and the unused 512×512 `emap` initializer last.


class AdaConv(nn.Module):
    def __init__(self, channels: int, relu: bool) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv = nn.Conv2d(channels, channels, 3)
        self.norm = nn.InstanceNorm2d(channels, eps=1e-8)
        self.style = nn.Linear(512, channels * 2)
        self.relu, self.channels = relu, channels

    def forward(self, x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        style = self.style(source)[:, :, None, None]
        # Static slices, not chunk(): chunk's sizes come from a Shape at run time in the
        # export, which hides every later shape from shape inference (and the MAC count).
        gamma, beta = style[:, : self.channels], style[:, self.channels :]
        x = self.norm(self.conv(self.pad(x))) * gamma + beta
        return F.relu(x) if self.relu else x


class Inswapper(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(3, 128, 7), lrelu(),
            conv(128, 256), lrelu(),
            conv(256, 512, stride=2), lrelu(),
            conv(512, 1024, stride=2), lrelu(),
        )  # fmt: skip
        self.blocks = nn.ModuleList(
            nn.ModuleList([AdaConv(1024, True), AdaConv(1024, False)]) for _ in range(6)
        )
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear"), conv(1024, 512), lrelu(),
            nn.Upsample(scale_factor=2, mode="bilinear"), conv(512, 256), lrelu(),
            conv(256, 128), lrelu(),
            nn.ReflectionPad2d(3), nn.Conv2d(128, 3, 7), nn.Tanh(),
        )  # fmt: skip

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        x = self.down(target)
        for first, second in self.blocks:
            x = x + second(first(x, source), source)
        return (self.up(x) + 1) / 2


# ---------------------------------------------------------------------------------------------
# StyleGAN2 pieces shared by GFPGAN v1.4 (GFPGANv1Clean) and GPEN-BFR-512.


class ModConv(nn.Module):
    """A modulated convolution: the input scaled per channel by the style, one convolution,
    the output demodulated per channel (StyleGAN2's non-fused form; same multiply-adds)."""

    def __init__(
        self, cin: int, cout: int, k: int, style: int, *, demod: bool = True, up: str = ""
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k) / math.sqrt(cin * k * k))
        self.modulation = nn.Linear(style, cin)
        self.demod, self.up, self.k, self.cout = demod, up, k, cout
        self.blur = Blur(cout, (1, 1)) if up == "transposed" else None

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = self.modulation(w)  # [1, cin]
        x = x * s[:, :, None, None]
        if self.up == "bilinear":  # GFPGAN "clean": interpolate, then convolve
            x = F.interpolate(x, scale_factor=2, mode="bilinear")
        if self.up == "transposed":  # StyleGAN2 / GPEN: stride-2 transposed conv, then blur
            x = F.conv_transpose2d(x, self.weight.transpose(0, 1), stride=2)
            x = self.blur(x)
        else:
            x = F.conv2d(x, self.weight, padding=self.k // 2)
        if self.demod:
            # Σ_in,k (w·s)² = s² · Σ_k w²: a [cout, cin] table (folded into one initializer at
            # export) times s², instead of a per-sample copy of the weight.
            d = torch.rsqrt(s.pow(2) @ self.weight.pow(2).sum([2, 3]).t() + 1e-8)
            x = x * d[:, :, None, None]
        return x


class Blur(nn.Module):
    """StyleGAN2's [1,3,3,1] FIR filter, depthwise over `channels`, after padding."""

    def __init__(self, channels: int, pad: tuple[int, int]) -> None:
        super().__init__()
        k = torch.tensor([1.0, 3.0, 3.0, 1.0])
        self.register_buffer(
            "kernel", ((k[:, None] * k[None, :]) / 64).expand(channels, 1, 4, 4).clone()
        )
        self.pad, self.channels = pad, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.pad[0], self.pad[1], self.pad[0], self.pad[1]))
        return F.conv2d(x, self.kernel, groups=self.channels)


class ResBlockGF(nn.Module):
    """GFPGANv1Clean's U-Net block: conv, lrelu, resample 2× (bilinear), conv, lrelu, plus a
    resampled 1×1 skip."""

    def __init__(self, cin: int, cout: int, mode: str) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv(cin, cin), conv(cin, cout)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False)
        self.scale = 0.5 if mode == "down" else 2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv1(x), LRELU)
        out = F.interpolate(out, scale_factor=self.scale, mode="bilinear")
        out = F.leaky_relu(self.conv2(out), LRELU)
        x = F.interpolate(x, scale_factor=self.scale, mode="bilinear")
        return out + self.skip(x)


def style_channels(narrow: float = 1.0) -> dict[int, int]:
    """StyleGAN2's channels per resolution at channel multiplier 2."""
    base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64}
    return {r: int(c * narrow) for r, c in base.items()}


class GFPGAN(nn.Module):
    """GFPGAN v1.4 = GFPGANv1Clean (Wang et al., CVPR 2021; the package's v1.4 config:
    out_size 512, 512-d style, channel multiplier 2, different_w, sft_half): a U-Net of half
    the decoder's channels (512→4 and back), a linear layer to 16 style vectors, a StyleGAN2
    decoder whose every level gets spatial feature transforms (scale and shift, two 3×3 convs
    each) on half its channels."""

    def __init__(self) -> None:
        super().__init__()
        dec, unet = style_channels(), style_channels(0.5)
        self.first = nn.Conv2d(3, unet[512], 1)
        res = [512, 256, 128, 64, 32, 16, 8, 4]
        self.down = nn.ModuleList(ResBlockGF(unet[r], unet[r // 2], "down") for r in res[:-1])
        self.final_conv = conv(unet[4], unet[4])
        self.final_linear = nn.Linear(unet[4] * 16, 512 * 16)
        self.up = nn.ModuleList(ResBlockGF(unet[r], unet[r * 2], "up") for r in res[::-1][:-1])
        ups = res[::-1][1:]  # 8 … 512
        self.cond_scale = nn.ModuleList(self._cond(unet[r]) for r in ups)
        self.cond_shift = nn.ModuleList(self._cond(unet[r]) for r in ups)
        self.const = nn.Parameter(torch.randn(1, dec[4], 4, 4))
        self.conv1 = ModConv(dec[4], dec[4], 3, 512)
        self.rgb1 = ModConv(dec[4], 3, 1, 512, demod=False)
        self.convs = nn.ModuleList()
        self.rgbs = nn.ModuleList()
        prev = dec[4]
        for r in ups:
            self.convs.append(ModConv(prev, dec[r], 3, 512, up="bilinear"))
            self.convs.append(ModConv(dec[r], dec[r], 3, 512))
            self.rgbs.append(ModConv(dec[r], 3, 1, 512, demod=False))
            prev = dec[r]

    @staticmethod
    def _cond(ch: int) -> nn.Module:
        return nn.Sequential(conv(ch, ch), lrelu(), conv(ch, ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = F.leaky_relu(self.first(x), LRELU)
        skips = []
        for block in self.down:
            feat = block(feat)
            skips.insert(0, feat)
        feat = F.leaky_relu(self.final_conv(feat), LRELU)
        latent = self.final_linear(feat.flatten(1)).view(1, 16, 512)
        scales, shifts = [], []
        for i, block in enumerate(self.up):
            feat = block(feat + skips[i])
            scales.append(self.cond_scale[i](feat))
            shifts.append(self.cond_shift[i](feat))
        out = F.leaky_relu(self.conv1(self.const, latent[:, 0]), LRELU)
        skip = self.rgb1(out, latent[:, 1])
        for i in range(len(self.rgbs)):
            out = F.leaky_relu(self.convs[2 * i](out, latent[:, 2 * i + 1]), LRELU)
            half = self.convs[2 * i].cout // 2  # static, as in AdaConv
            same, sft = out[:, :half], out[:, half:]
            out = torch.cat([same, sft * scales[i] + shifts[i]], 1)
            out = F.leaky_relu(self.convs[2 * i + 1](out, latent[:, 2 * i + 2]), LRELU)
            skip = F.interpolate(skip, scale_factor=2, mode="bilinear")
            skip = skip + self.rgbs[i](out, latent[:, 2 * i + 3])
        return skip


class GPEN(nn.Module):
    """GPEN-BFR-512 (Yang et al., CVPR 2021, "GAN Prior Embedded Network"): a strided-conv
    encoder 512→4 whose features at every resolution are concatenated as the "noise" of a
    StyleGAN2 generator (so its layers take twice the channels), an 8-layer mapping MLP, a
    linear layer from the 4×4 features to the 512-d latent; channel multiplier 2."""

    def __init__(self) -> None:
        super().__init__()
        ch = style_channels()
        res = [512, 256, 128, 64, 32, 16, 8, 4]
        self.enc0 = nn.Sequential(nn.Conv2d(3, ch[512], 1), lrelu())
        self.enc = nn.ModuleList(
            nn.Sequential(Blur(ch[r], (2, 2)), nn.Conv2d(ch[r], ch[r // 2], 3, 2, 0), lrelu())
            for r in res[:-1]
        )  # blur, then a stride-2 conv: StyleGAN2's downsampling
        self.final_linear = nn.Sequential(nn.Linear(ch[4] * 16, 512), lrelu())
        self.mapping = nn.Sequential(*[m for _ in range(8) for m in (nn.Linear(512, 512), lrelu())])
        self.const = nn.Parameter(torch.randn(1, ch[4], 4, 4))
        self.conv1 = ModConv(ch[4], ch[4], 3, 512)
        self.rgb1 = ModConv(ch[4] * 2, 3, 1, 512, demod=False)
        self.convs, self.rgbs = nn.ModuleList(), nn.ModuleList()
        prev = ch[4]
        for r in res[::-1][1:]:
            self.convs.append(ModConv(prev * 2, ch[r], 3, 512, up="transposed"))
            self.convs.append(ModConv(ch[r] * 2, ch[r], 3, 512))
            self.rgbs.append(ModConv(ch[r] * 2, 3, 1, 512, demod=False))
            prev = ch[r]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.enc0(x)
        feats = [feat]
        for block in self.enc:
            feat = block(feat)
            feats.append(feat)
        w = self.mapping(self.final_linear(feat.flatten(1)))
        noise = feats[::-1]  # 4×4 first
        out = F.leaky_relu(torch.cat([self.conv1(self.const, w), noise[0]], 1), LRELU)
        skip = self.rgb1(out, w)
        for i in range(len(self.rgbs)):
            out = F.leaky_relu(torch.cat([self.convs[2 * i](out, w), noise[i + 1]], 1), LRELU)
            out = F.leaky_relu(torch.cat([self.convs[2 * i + 1](out, w), noise[i + 1]], 1), LRELU)
            skip = F.interpolate(skip, scale_factor=2, mode="bilinear")
            skip = skip + self.rgbs[i](out, w)
        return skip


# ---------------------------------------------------------------------------------------------
# CodeFormer (Zhou et al., NeurIPS 2022): a VQGAN (nf 64, channel multipliers 1,2,2,4,4,8, two
# residual blocks per level, attention at 16×16, 1024×256 codebook), a 9-layer transformer
# (512-d, 8 heads, FFN 1024) predicting code indices for the 16×16 latent, and controllable
# feature transformation blocks fusing encoder features into the decoder at 32…256 by `weight`.


def gn(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, ch, eps=1e-6)


class VQRes(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            gn(cin), nn.SiLU(), conv(cin, cout), gn(cout), nn.SiLU(), conv(cout, cout)
        )
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class VQAttn(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm, self.qkv, self.proj = gn(ch), nn.Conv2d(ch, ch * 3, 1), nn.Conv2d(ch, ch, 1)
        self.ch = ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = 1, self.ch, 16, 16  # static (see AdaConv): attention runs at 16×16 only
        qkv = self.qkv(self.norm(x)).reshape(b, 3 * c, h * w)
        q, k, v = qkv[:, :c], qkv[:, c : 2 * c], qkv[:, 2 * c :]  # [b, c, hw]
        attn = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)  # [b, hw, hw]
        return x + self.proj((v @ attn.transpose(1, 2)).view(b, c, h, w))


class Fuse(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.encode = VQRes(2 * ch, ch)
        self.scale = nn.Sequential(conv(ch, ch), lrelu(), conv(ch, ch))
        self.shift = nn.Sequential(conv(ch, ch), lrelu(), conv(ch, ch))

    def forward(self, enc: torch.Tensor, dec: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        enc = self.encode(torch.cat([enc, dec], 1))
        return dec + w * (dec * self.scale(enc) + self.shift(enc))


class SALayer(nn.Module):
    """Pre-norm self-attention (8 heads, position added to queries and keys) and an FFN, with
    static shapes (256 tokens, one sample): nn.MultiheadAttention's export reshapes by
    run-time shapes, which hides them from shape inference and the MAC count."""

    TOKENS, HEADS = 256, 8

    def __init__(self, dim: int = 512, mlp: int = 1024) -> None:
        super().__init__()
        self.qk, self.v, self.out = (
            nn.Linear(dim, 2 * dim),
            nn.Linear(dim, dim),
            nn.Linear(dim, dim),
        )
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))
        self.dim = dim

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        t, h, d = self.TOKENS, self.HEADS, self.dim // self.HEADS
        y = self.norm1(x)  # [t, 1, dim]
        qk = self.qk(y + pos).reshape(t, 2, h, d).permute(1, 2, 0, 3)  # [2, h, t, d]
        v = self.v(y).reshape(t, h, d).permute(1, 0, 2)  # [h, t, d]
        attn = torch.softmax(qk[0] @ qk[1].transpose(1, 2) / math.sqrt(d), dim=-1)
        x = x + self.out((attn @ v).permute(1, 0, 2).reshape(t, 1, self.dim))
        return x + self.ffn(self.norm2(x))


class CodeFormer(nn.Module):
    MULT = (1, 2, 2, 4, 4, 8)
    FUSE = (32, 64, 128, 256)

    def __init__(self) -> None:
        super().__init__()
        nf, emb = 64, 256
        chans = [nf * m for m in self.MULT]  # at 512, 256, …, 16
        self.enc_in = conv(3, nf)
        self.enc_levels = nn.ModuleList()
        cin, res = nf, 512
        for i, cout in enumerate(chans):
            layers: list[nn.Module] = [VQRes(cin, cout), VQRes(cout, cout)]
            if res == 16:
                layers = [layers[0], VQAttn(cout), layers[1], VQAttn(cout)]
            if i < len(chans) - 1:
                layers.append(nn.Conv2d(cout, cout, 3, 2, 0))  # padded (0,1,0,1) in forward
            self.enc_levels.append(nn.ModuleList(layers))
            cin, res = cout, res // 2 if i < len(chans) - 1 else res
        top = chans[-1]
        self.enc_mid = nn.Sequential(
            VQRes(top, top), VQAttn(top), VQRes(top, top), gn(top), nn.SiLU(), conv(top, emb)
        )
        self.position = nn.Parameter(torch.randn(256, 1, 512) * 0.02)
        self.feat_emb = nn.Linear(emb, 512)
        self.layers = nn.ModuleList(SALayer() for _ in range(9))
        self.idx_pred = nn.Sequential(nn.LayerNorm(512), nn.Linear(512, 1024, bias=False))
        self.codebook = nn.Parameter(torch.randn(1024, emb))
        self.dec_in = nn.Sequential(conv(emb, top), VQRes(top, top), VQAttn(top), VQRes(top, top))
        self.dec_levels = nn.ModuleList()
        cin, res = top, 16
        for i, cout in enumerate(chans[::-1]):
            layers = [VQRes(cin, cout), VQRes(cout, cout)]
            if res == 16:
                layers = [layers[0], VQAttn(cout), layers[1], VQAttn(cout)]
            self.dec_levels.append(nn.ModuleList(layers))
            if i < len(chans) - 1:
                self.dec_levels.append(nn.ModuleList([conv(cout, cout)]))  # after 2× nearest
                res *= 2
            cin = cout
        self.dec_out = nn.Sequential(gn(nf), nn.SiLU(), conv(nf, 3))
        size = {512 // 2**i: c for i, c in enumerate(chans)}
        self.fuse = nn.ModuleDict({str(r): Fuse(size[r]) for r in self.FUSE})

    def forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        w = weight.float().view(1, 1, 1, 1)
        x = self.enc_in(x)
        enc, side = {}, 512  # sides tracked as ints: a traced x.shape is a tensor
        for level in self.enc_levels:
            for layer in level:
                if isinstance(layer, nn.Conv2d):
                    enc[side] = x
                    x = layer(F.pad(x, (0, 1, 0, 1)))
                    side //= 2
                else:
                    x = layer(x)
        lq = self.enc_mid(x)  # [1, 256, 16, 16]
        query = self.feat_emb(lq.flatten(2).permute(2, 0, 1))  # [256, 1, 512]
        for layer in self.layers:
            query = layer(query, self.position)
        logits = self.idx_pred(query).permute(1, 0, 2)  # [1, 256, 1024]
        index = torch.argmax(torch.softmax(logits, dim=2), dim=2)[0]
        x = self.codebook[index].view(1, 16, 16, -1).permute(0, 3, 1, 2)
        x = self.dec_in(x)
        for level in self.dec_levels:
            if len(level) == 1:  # upsample
                x = level[0](F.interpolate(x, scale_factor=2, mode="nearest"))
                side *= 2
                continue
            for layer in level:
                x = layer(x)
            if side in self.FUSE:
                x = self.fuse[str(side)](enc[side], x, w)
        return self.dec_out(x)


# ---------------------------------------------------------------------------------------------
# Wav2Lip 96 (Prajwal et al., ACM MM 2020): a face encoder (7 strided stages, 16→512 channels,
# residual conv-BN-ReLU blocks) over the 6-channel masked+reference face, an audio encoder over
# the 80×16 mel window to 512×1×1, a transposed-conv decoder with U-Net skips to 96×96, sigmoid.


class CBR(nn.Module):
    def __init__(
        self, cin: int, cout: int, k: int, s: int | tuple, p: int, res: bool = False
    ) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(cin, cout, k, s, p), nn.BatchNorm2d(cout))
        self.res = res

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return F.relu(out + x if self.res else out)


class TBR(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, s: int, p: int, op: int = 0) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, k, s, p, op), nn.BatchNorm2d(cout), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def _stage(cin: int, cout: int, stride: int | tuple, residual: int) -> nn.Sequential:
    return nn.Sequential(
        CBR(cin, cout, 3, stride, 1), *[CBR(cout, cout, 3, 1, 1, True) for _ in range(residual)]
    )


def _up(cin: int, cout: int) -> nn.Sequential:
    """A 2× transposed-conv stage and two residual blocks."""
    res = [CBR(cout, cout, 3, 1, 1, True) for _ in range(2)]
    return nn.Sequential(TBR(cin, cout, 3, 2, 1, 1), *res)


class Wav2Lip(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.face = nn.ModuleList([
            CBR(6, 16, 7, 1, 3),
            _stage(16, 32, 2, 2), _stage(32, 64, 2, 3), _stage(64, 128, 2, 2),
            _stage(128, 256, 2, 2), _stage(256, 512, 2, 1),
            nn.Sequential(CBR(512, 512, 3, 1, 0), CBR(512, 512, 1, 1, 0)),
        ])  # fmt: skip
        self.audio = nn.Sequential(
            _stage(1, 32, 1, 2), _stage(32, 64, (3, 1), 2), _stage(64, 128, 3, 2),
            _stage(128, 256, (3, 2), 1), CBR(256, 512, 3, 1, 0), CBR(512, 512, 1, 1, 0),
        )  # fmt: skip
        self.decoder = nn.ModuleList([
            CBR(512, 512, 1, 1, 0),
            nn.Sequential(TBR(1024, 512, 3, 1, 0), CBR(512, 512, 3, 1, 1, True)),
            _up(1024, 512),
            _up(768, 384),
            _up(512, 256),
            _up(320, 128),
            _up(160, 64),
        ])  # fmt: skip
        self.out = nn.Sequential(CBR(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1), nn.Sigmoid())

    def forward(self, mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        feats, x = [], face
        for block in self.face:
            x = block(x)
            feats.append(x)
        x = self.audio(mel)
        for block in self.decoder:
            x = torch.cat([block(x), feats.pop()], 1)
        return self.out(x)


# ---------------------------------------------------------------------------------------------
# XSeg (DeepFaceLab's occlusion segmenter, XSegNet): 256×256 BGR, base width 32, six
# downsampling stages (2,2,2,3,3,3 convs of 32,64,128,256,256,256 channels, each conv followed
# by filter response normalisation and a thresholded linear unit), a dense bottleneck
# 4×4×256→512→4×4×256, a mirrored decoder of stride-2 transposed convs with skip
# concatenations, a 1-channel sigmoid head. Input and output NHWC.


class FRNConv(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = conv(cin, cout)
        self.gamma = nn.Parameter(torch.ones(1, cout, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, cout, 1, 1))
        self.tau = nn.Parameter(torch.zeros(1, cout, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = x * torch.rsqrt(x.pow(2).mean([2, 3], keepdim=True) + 1e-6)
        return torch.maximum(self.gamma * x + self.beta, self.tau)


class XSeg(nn.Module):
    WIDTHS = (32, 64, 128, 256, 256, 256)
    DEPTHS = (2, 2, 2, 3, 3, 3)

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.ModuleList()
        cin = 3
        for width, depth in zip(self.WIDTHS, self.DEPTHS, strict=True):
            self.enc.append(
                nn.Sequential(*[FRNConv(cin if i == 0 else width, width) for i in range(depth)])
            )
            cin = width
        self.dense = nn.Sequential(nn.Linear(256 * 16, 512), nn.Linear(512, 256 * 16))
        self.ups, self.dec = nn.ModuleList(), nn.ModuleList()
        prev = 256
        for width, depth in zip(self.WIDTHS[::-1], self.DEPTHS[::-1], strict=True):
            self.ups.append(nn.ConvTranspose2d(prev, width, 3, 2, 1, 1))
            self.dec.append(
                nn.Sequential(
                    *[FRNConv(width * 2 if i == 0 else width, width) for i in range(depth)]
                )
            )
            prev = width
        self.head = conv(32, 1)

    def forward(self, bgr: torch.Tensor) -> torch.Tensor:
        x, skips = bgr.permute(0, 3, 1, 2), []
        for stage in self.enc:
            x = stage(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.dense(x.flatten(1)).unflatten(1, (256, 4, 4))
        for up, stage in zip(self.ups, self.dec, strict=True):
            x = stage(torch.cat([F.leaky_relu(up(x), LRELU), skips.pop()], 1))
        return torch.sigmoid(self.head(x)).permute(0, 2, 3, 1)


# ---------------------------------------------------------------------------------------------
# BiSeNet face parser with a ResNet-34 backbone (Yu et al., ECCV 2018, as the CelebAMask-HQ
# face-parsing models use it): context path = ResNet-34 (3,4,6,3 basic blocks) features at
# 1/8, 1/16, 1/32, attention refinement modules to 128 channels, global context, a feature
# fusion module (256) over the 1/8 features, a 3×3 head and 19-class 1×1 output upsampled 8×.


class Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )  # fmt: skip
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


def cbr(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, 1, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


class ARM(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = cbr(cin, cout)
        self.att = nn.Sequential(
            nn.Conv2d(cout, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x * self.att(x.mean([2, 3], keepdim=True))


class BiSeNet34(nn.Module):
    def __init__(self, classes: int = 19) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        )
        stages, cin = [], 64
        for cout, n, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            stages.append(
                nn.Sequential(
                    *[
                        Basic(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                        for i in range(n)
                    ]
                )
            )
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.arm16, self.arm32 = ARM(256, 128), ARM(512, 128)
        self.head16, self.head32 = cbr(128, 128), cbr(128, 128)
        self.avg = cbr(512, 128, 1)
        self.ffm = cbr(256, 256, 1)
        self.ffm_att = nn.Sequential(
            nn.Conv2d(256, 64, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(64, 256, 1, bias=False),
            nn.Sigmoid(),
        )
        self.out = nn.Sequential(cbr(256, 256), nn.Conv2d(256, classes, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        f = self.stages[0](self.stem(x))
        f8 = self.stages[1](f)
        f16 = self.stages[2](f8)
        f32 = self.stages[3](f16)
        ctx = self.avg(f32.mean([2, 3], keepdim=True))
        up32 = F.interpolate(self.arm32(f32) + ctx, size=f16.shape[2:], mode="nearest")
        up32 = self.head32(up32)
        up16 = F.interpolate(self.arm16(f16) + up32, size=f8.shape[2:], mode="nearest")
        up16 = self.head16(up16)
        fused = self.ffm(torch.cat([f8, up16], 1))
        fused = fused + fused * self.ffm_att(fused.mean([2, 3], keepdim=True))
        return F.interpolate(self.out(fused), size=size, mode="bilinear")


# ---------------------------------------------------------------------------------------------

BUILDERS = {
    "inswapper_128": (Inswapper, ("target", "source"), ((1, 3, 128, 128), (1, 512)), {}),
    "gfpgan_1.4": (GFPGAN, ("input",), ((1, 3, 512, 512),), {}),
    "gpen_bfr_512": (GPEN, ("input",), ((1, 3, 512, 512),), {}),
    "codeformer": (CodeFormer, ("input", "weight"), ((1, 3, 512, 512), (1,)), {}),
    "wav2lip_gan_96": (
        Wav2Lip,
        ("source", "target"),
        ((1, 1, 80, 16), (1, 6, 96, 96)),
        {"source": {0: "batch"}, "target": {0: "batch"}, "output": {0: "batch"}},
    ),
    "xseg_1": (XSeg, ("input",), ((1, 256, 256, 3),), {"input": {0: "n"}, "output": {0: "n"}}),
    "bisenet_resnet_34": (BiSeNet34, ("input",), ((1, 3, 512, 512),), {}),
}


def _model_and_args(name: str) -> tuple[nn.Module, tuple, tuple, dict]:
    torch.manual_seed(0)
    cls, inputs, shapes, dynamic = BUILDERS[name]
    args = tuple(
        torch.rand(shape, dtype=torch.float64 if inp == "weight" else torch.float32)
        for inp, shape in zip(inputs, shapes, strict=True)
    )
    return cls().eval(), args, inputs, dynamic


def module_macs(name: str) -> int:
    """Multiply-adds of the model's Conv2d, ConvTranspose2d and Linear modules on one sample,
    counted by forward hooks from the modules' weights and tensors — independently of the ONNX
    graph, to check bench/cost_models.count_macs. (Matrix products written as `@` in a
    forward, as in attention, are not modules and are not counted here.)"""
    model, args, _, _ = _model_and_args(name)
    total = [0]

    def hook(module: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            per_out = module.weight[0].numel()  # Cin/groups × kernel
            total[0] += out.numel() * per_out
        elif isinstance(module, nn.ConvTranspose2d):
            total[0] += inp[0].numel() * module.weight[0].numel()  # Cout/groups × kernel
        elif isinstance(module, nn.Linear):
            total[0] += out.numel() * module.in_features

    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            module.register_forward_hook(hook)
    with torch.no_grad():
        model(*args)
    return total[0]


def export(name: str, out: str) -> None:
    model, args, inputs, dynamic = _model_and_args(name)
    with torch.no_grad():
        torch.onnx.export(
            model, args, out, input_names=list(inputs), output_names=["output"],
            dynamic_axes=dynamic or None, opset_version=17, dynamo=False,
        )  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1] == "--module-macs":
        print(module_macs(sys.argv[2]))
    else:
        export(sys.argv[1], sys.argv[2])
