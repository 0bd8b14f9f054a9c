"""The prior registry is the only list of priors: ns-train's subcommands and ``relight3d relight --prior`` follow it."""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tyro
from prior_fixtures import TINY_MODELS

from relight3d.errors import ConfigError, WeightsError
from relight3d.priors import registry
from relight3d.priors.base import RelightingPriorConfig
from relight3d.priors.diffusion.testing import tiny_components
from relight3d.priors.physical import PhysicalPriorConfig


@dataclass
class DummyPriorConfig(RelightingPriorConfig):
    """A prior that exists only in this test."""

    strength: float = 1.0
    """How strongly it relights."""


def subcommand_names(union: object) -> list:
    """The tyro subcommand names of a ``Union[Annotated[cls, tyro.conf.subcommand(name=...)], ...]``."""
    return [typing.get_args(member)[1].name for member in typing.get_args(union)]


def config_class_of(name: str) -> type:
    """The config class of a registry entry: the entry itself, or for a ``<name>-public`` preset its prior's."""
    return registry.PRIORS[name.removesuffix("-public")]


def test_every_entry_builds_its_config() -> None:
    assert registry.DEFAULT_PRIOR == next(iter(registry.PRIORS)) == "physical"
    presets = [name for name in registry.PRIORS if name.endswith("-public")]
    assert presets == ["neural-gaffer-public", "ic-light-public", "instruct-pix2pix-public"]
    for name in registry.PRIORS:
        config_class = config_class_of(name)
        config = registry.prior_config(name)
        assert type(config) is config_class and issubclass(config_class, RelightingPriorConfig)
        assert config._target.__name__ == config_class.__name__.removesuffix("Config")
        if hasattr(config, "model_path"):
            assert registry.prior_config(name, "weights/x").model_path == Path("weights/x")
    for name in presets:  # a preset is its prior with other values, and a fresh object each time
        assert registry.prior_config(name) != config_class_of(name)()
        assert registry.prior_config(name) is not registry.prior_config(name)
    with pytest.raises(ConfigError) as info:
        registry.prior_config("gaffer")
    assert str(info.value) == (
        "--prior: unknown prior 'gaffer'; known priors: physical, neural-gaffer, neural-gaffer-public, ic-light, "
        "ic-light-public, instruct-pix2pix, instruct-pix2pix-public, diffusion-renderer, "
        "difareli, relight-unet"
    )
    with pytest.raises(ConfigError, match="^--prior-path: the physical prior loads no weights"):
        registry.prior_config("physical", "weights/x")


def test_a_preset_is_a_subcommand_with_its_values_and_overridable() -> None:
    holder = dataclasses.make_dataclass(
        "Holder", [("prior", registry.PriorChoice, field(default_factory=PhysicalPriorConfig))]
    )
    public = tyro.cli(holder, args=["prior:instruct-pix2pix-public"]).prior
    assert public == registry.prior_config("instruct-pix2pix-public")
    assert (
        public.num_inference_steps == 100
        and public.num_inference_steps != config_class_of("instruct-pix2pix")().num_inference_steps
    )
    changed = tyro.cli(holder, args=["prior:instruct-pix2pix-public", "--prior.num-inference-steps", "7"]).prior
    assert changed.num_inference_steps == 7 and changed.scheduler == public.scheduler


def test_ns_train_relight3d_gaffer_offers_exactly_the_registry() -> None:
    from relight3d.method_configs import gaffer_method

    pipeline_class = type(gaffer_method.config.pipeline)
    union = typing.get_type_hints(pipeline_class, include_extras=True)["prior"]
    assert union is registry.PriorChoice
    assert subcommand_names(union) == list(registry.PRIORS)
    assert type(gaffer_method.config.pipeline.prior) is registry.PRIORS[registry.DEFAULT_PRIOR]


def test_a_prior_added_to_the_table_appears_everywhere(monkeypatch, capsys) -> None:
    monkeypatch.setitem(registry.PRIORS, "dummy", DummyPriorConfig)
    union = registry.prior_union(registry.PRIORS)
    assert subcommand_names(union) == [*subcommand_names(registry.PriorChoice), "dummy"]
    holder = dataclasses.make_dataclass("Holder", [("prior", union, field(default_factory=PhysicalPriorConfig))])
    parsed = tyro.cli(holder, args=["prior:dummy", "--prior.strength", "2.5"])
    assert parsed.prior == DummyPriorConfig(strength=2.5)
    assert registry.prior_config("dummy") == DummyPriorConfig()
    with pytest.raises(ConfigError, match="loads no weights"):
        registry.prior_config("dummy", "weights")
    from relight3d.cli import main

    monkeypatch.setattr(sys, "argv", ["relight3d"])
    with pytest.raises(SystemExit) as exit_info:
        main(["relight", "--help"])
    assert exit_info.value.code == 0 and "dummy" in capsys.readouterr().out


WRONG_UNETS = {
    # prior: (input channels of a UNet that is not the prior's, what the error says the prior's takes)
    "neural-gaffer": (8, "Neural Gaffer's takes 16 (noisy, image, HDR-map and LDR-map latents) (a Zero123 base?"),
    "ic-light": (4, "IC-Light's takes 8 (fc: noisy + foreground latents) or 12 (fbc: + background latent)"),
    "instruct-pix2pix": (16, "InstructPix2Pix's takes 8 (noisy latent + input-image latent)"),
}
CHECKED_ELSEWHERE = {
    # priors whose weights are not (only) a diffusers folder of the shared layout: where their loading is checked
    "diffusion-renderer": "tests/priors/test_prior_diffusion_renderer.py::test_builtin_loading_is_strict",
    "difareli": "tests/priors/test_prior_difareli.py::test_missing_and_wrong_checkpoints_are_one_line_errors",
    "relight-unet": "tests/pipelines/test_relight_unet.py::test_bad_model_folders_are_one_line",
}


@pytest.mark.parametrize("name", [n for n in registry.PRIORS if n.removesuffix("-public") in WRONG_UNETS])
def test_a_checkpoint_with_another_unet_is_a_one_line_weights_error(name: str, tmp_path: Path) -> None:
    """Every prior that loads weights refuses a checkpoint of its layout whose UNet is not its own, naming the UNet
    folder, its channels, what the prior's takes, and the option that merges the right weights in (if any)."""
    loading = {n.removesuffix("-public") for n, factory in registry.PRIORS.items() if hasattr(factory(), "model_path")}
    assert set(WRONG_UNETS) | set(CHECKED_ELSEWHERE) == loading
    config_class = config_class_of(name)
    channels, takes = WRONG_UNETS[name.removesuffix("-public")]
    folder = tiny_components(TINY_MODELS[config_class][0], channels).save_pretrained(tmp_path / "other")
    with pytest.raises(WeightsError) as info:
        registry.prior_config(name, folder).setup()
    message = str(info.value)
    assert message.startswith(f"{folder / 'unet'}: UNet takes {channels} input channels; {takes}"), message
    assert "\n" not in message
    merge_option = getattr(config_class()._target, "unet_weights_field", None)
    assert merge_option is None or merge_option in message
