"""Training recipes, batched augmentation, CIFAR ResNets, pretrained weights and half-precision training."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from stealbench.augment import BatchAugment, crop_padding, dataset_augmentation
from stealbench.data.colour_sets import CIFAR10, GTSRB, SVHN
from stealbench.data.digits import Digits
from stealbench.errors import ConfigError
from stealbench.models import build_net
from stealbench.recipes import RECIPES, get_recipe
from stealbench.training import (Classifier, ShuffledBatches, TrainSettings, fit, make_loader, predict_probs,
                                 soft_cross_entropy)

SHAPE = (1, 8, 8)


def tiny_data(n: int = 96, shape=SHAPE):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 10
    return torch.rand(n, *shape, generator=g), F.one_hot(y, 10).float()


def tiny_net(arch: str = "mlp", shape=SHAPE):
    torch.manual_seed(0)
    return build_net(arch, num_classes=10, input_shape=shape, mean=(0.5,) * shape[0], std=(0.25,) * shape[0])


def trainer(epochs: int = 1, **kwargs) -> L.Trainer:
    return L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu", **kwargs)


class HistoricalClassifier(L.LightningModule):
    """stealbench's training before recipes existed: Adam, plain soft cross-entropy, no schedule."""

    def __init__(self, net, lr=1e-3, weight_decay=0.0):
        super().__init__()
        self.net, self.lr, self.weight_decay = net, lr, weight_decay

    def training_step(self, batch, batch_idx):
        x, targets = batch
        return -(targets * F.log_softmax(self.net(x), dim=-1)).sum(-1).mean()

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)


@pytest.mark.parametrize("lr,weight_decay", [(None, None), (3e-3, 1e-4)])
def test_default_recipe_trains_exactly_as_before(one_thread, lr, weight_decay):
    x, t = tiny_data()
    new = fit(tiny_net(), x, t, 2, TrainSettings(batch_size=16, lr=lr, weight_decay=weight_decay,
                                                trainer={"accelerator": "cpu"}), seed=3)
    old_net = tiny_net()
    trainer(2).fit(HistoricalClassifier(old_net, lr or 1e-3, weight_decay or 0.0),
                   train_dataloaders=make_loader(x, t, batch_size=16, seed=3))
    for (name, a), b in zip(new.state_dict().items(), old_net.state_dict().values()):
        assert torch.equal(a, b), name  # bit for bit: existing numbers do not move


@pytest.mark.parametrize("name,optimizer", [("cifar-sgd", torch.optim.SGD), ("cifar-onecycle", torch.optim.SGD),
                                            ("adamw-cosine", torch.optim.AdamW)])
def test_recipes_build_their_optimiser_and_a_per_step_schedule(one_thread, name, optimizer):
    x, t = tiny_data(64)
    module = Classifier(tiny_net(), recipe=get_recipe(name))
    lrs = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    tr = trainer(2, callbacks=[Record()])
    tr.fit(module, train_dataloaders=make_loader(x, t, batch_size=16, seed=0))
    opt = tr.optimizers[0]
    assert type(opt) is optimizer and tr.lr_scheduler_configs[0].interval == "step"
    assert len(set(lrs)) == len(lrs) == 8  # a new learning rate after every one of the 2 x 4 steps
    if name == "cifar-sgd":
        assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9 and opt.defaults["weight_decay"] == 5e-4
        assert module.recipe.label_smoothing == 0.1 and lrs[-1] < 1e-9  # cosine annealed to zero
    if name == "cifar-onecycle":
        assert max(lrs) > lrs[0] and max(lrs) > lrs[-1]  # warms up, then anneals


def test_explicit_lr_and_weight_decay_override_the_recipe():
    recipe = TrainSettings(recipe="cifar-sgd", lr=0.02).resolved_recipe()
    assert (recipe.optimizer, recipe.lr, recipe.weight_decay) == ("sgd", 0.02, 5e-4)
    assert TrainSettings(recipe="cifar-sgd").resolved_recipe() == RECIPES["cifar-sgd"]
    assert TrainSettings().resolved_recipe().lr == 1e-3  # `default`: stealbench's historical Adam lr


def test_unknown_recipe_lists_close_matches():
    with pytest.raises(ConfigError, match=r"--victim.recipe 'cifar_sgd'.*Did you mean: cifar-sgd"):
        get_recipe("cifar_sgd", "victim.recipe")
    with pytest.raises(ConfigError, match="Known recipes: default"):
        TrainSettings(recipe="fast").resolved_recipe()


@pytest.mark.filterwarnings("ignore:You are trying to `self.log()`")
def test_label_smoothing_changes_the_loss_target():
    logits = torch.tensor([[4.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0]])
    module = Classifier(torch.nn.Identity(), recipe=get_recipe("cifar-sgd"))
    smoothed = soft_cross_entropy(logits, torch.tensor([[0.95, 0.05]]))
    assert torch.isclose(module.training_step((logits, targets), 0), smoothed)


def test_crop_moves_each_image_within_its_zero_padded_frame():
    x = torch.rand(64, 3, 16, 16)
    out = BatchAugment("crop", seed=0)(x)
    pad = crop_padding(16)
    padded = F.pad(x, (pad,) * 4)
    offsets = set()
    for i in range(len(x)):  # brute force over every allowed shift (a test, not a hot path)
        hits = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                if torch.equal(out[i], padded[i, :, dy:dy + 16, dx:dx + 16])]
        assert hits, f"image {i} is not a window of its padded original"
        offsets.add(hits[0])
    assert len(offsets) > 10  # shifts are drawn per image, not once per batch


def test_flip_mirrors_about_half_the_batch_and_is_reproducible():
    x = torch.rand(400, 1, 4, 4)
    assert BatchAugment("none", seed=0)(x) is x  # "none" costs nothing
    flip_only = BatchAugment("crop-flip", seed=1)
    flip_only.crop = False
    out = flip_only(x)
    mirrored = torch.tensor([torch.equal(o, i.flip(2)) for o, i in zip(out, x)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert bool((mirrored | kept).all()) and 120 < int(mirrored.sum()) < 280
    again = BatchAugment("crop-flip", seed=1)
    again.crop = False
    assert torch.equal(again(x), out)


def test_data_sets_declare_their_augmentation_and_the_recipe_switches_it():
    assert dataset_augmentation(Digits()) == "none"  # digit sets are never augmented
    assert dataset_augmentation(CIFAR10()) == "crop-flip"
    assert dataset_augmentation(SVHN()) == dataset_augmentation(GTSRB()) == "crop"  # no mirrored digits or signs
    on = BatchAugment("crop-flip", seed=0)
    assert Classifier(tiny_net(), recipe=get_recipe("cifar-sgd"), augment=on).augment is on
    assert Classifier(tiny_net(), augment=on).augment is None  # `default` never augments
    with pytest.raises(ConfigError, match="crop-flip"):
        BatchAugment("crop_flip", seed=0)


def test_batches_can_live_on_the_training_device_with_the_same_order():
    x, t = torch.arange(20.0).view(20, 1, 1, 1), torch.arange(20.0).view(20, 1)
    cpu = [b[1].flatten().tolist() for b in ShuffledBatches(x, t, 8, seed=5)]
    moved = ShuffledBatches(x, t, 8, seed=5).to(torch.device("meta"))  # a stand-in for a GPU
    batches = list(moved)
    assert all(bx.device.type == "meta" and bt.device.type == "meta" for bx, bt in batches)
    assert len(batches) == len(cpu) == 3
    again = ShuffledBatches(x, t, 8, seed=5).to(torch.device("cpu"))
    assert [b[1].flatten().tolist() for b in again] == cpu  # the order comes from a CPU generator


@pytest.mark.parametrize("precision", ["bf16-true", "bf16-mixed"])
def test_half_precision_trains_and_predicts_in_float32(one_thread, precision):
    x, t = tiny_data(64)
    settings = TrainSettings(batch_size=32, trainer={"accelerator": "cpu", "precision": precision},
                             recipe="cifar-sgd", augment="crop-flip")
    net = fit(tiny_net("cnn"), x, t, 1, settings, seed=0)
    assert all(p.dtype == torch.float32 for p in net.parameters())
    probs = predict_probs(net, x, torch.device("cpu"))
    assert probs.dtype == torch.float32 and torch.allclose(probs.sum(1), torch.ones(64), atol=1e-5)
    half = net.to(torch.bfloat16)  # a net kept in bf16 (e.g. loaded as such) still predicts from float32 inputs
    assert predict_probs(half, x, torch.device("cpu")).dtype == torch.float32


def test_soft_cross_entropy_is_float32_under_autocast():
    logits = torch.randn(4, 10, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = soft_cross_entropy(torch.nn.functional.linear(logits, torch.eye(10)), F.softmax(logits, -1))
    assert loss.dtype == torch.float32


def test_cifar_resnets_are_registered_with_a_3x3_stem():
    net = tiny_net("resnet20", (3, 32, 32))
    params = sum(p.numel() for p in net.parameters())
    assert 0.26e6 < params < 0.28e6  # He et al. 2016: 0.27M
    stem = net[1].stem[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    wide = tiny_net("resnet18-cifar", (1, 8, 8))
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in wide.modules())
    assert wide(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_pretrained_needs_an_architecture_that_has_weights():
    with pytest.raises(ConfigError, match="has no pretrained weights"):
        build_net("resnet20", num_classes=10, input_shape=(3, 32, 32), mean=(0.5,) * 3, std=(0.2,) * 3,
                  pretrained=True)


def test_pretrained_offline_names_what_to_fetch_and_where(monkeypatch, tmp_path):
    import timm

    def offline(*args, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real(*args, **kwargs)

    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)  # no network in tests, whatever the machine has
    monkeypatch.setenv("STEALBENCH_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(ConfigError) as info:
        build_net("resnet10t", num_classes=10, input_shape=(3, 32, 32), mean=(0.5,) * 3, std=(0.2,) * 3,
                  pretrained=True)
    message = str(info.value)
    assert "https://huggingface.co/timm/resnet10t.c3_in1k" in message and "resnet10t_176_c3" in message
    assert f"{tmp_path}/resnet10t.safetensors" in message and "STEALBENCH_WEIGHTS_DIR" in message


def test_pretrained_weights_load_from_the_weights_folder(monkeypatch, tmp_path):
    import timm

    source = timm.create_model("resnet10t", pretrained=False)  # stands in for the downloaded ImageNet weights
    torch.save(source.state_dict(), tmp_path / "resnet10t.pth")
    monkeypatch.setenv("STEALBENCH_WEIGHTS_DIR", str(tmp_path))
    net = build_net("resnet10t", num_classes=10, input_shape=(3, 32, 32), mean=(0.5,) * 3, std=(0.2,) * 3,
                    pretrained=True)
    first = next(iter(source.state_dict()))
    assert torch.equal(net[1].state_dict()[first], source.state_dict()[first])
    assert net[1].get_classifier().out_features == 10  # a new head for this task
    assert torch.allclose(net[0].mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))  # the weights' statistics


def test_settings_from_config_check_the_recipe_and_take_the_data_sets_augmentation():
    from stealbench.config import SurrogateConfig, VictimConfig

    settings = TrainSettings.from_config(VictimConfig(recipe="cifar-sgd", weight_decay=1e-3), "victim", CIFAR10(),
                                         trainer={"accelerator": "cpu"})
    recipe = settings.resolved_recipe()
    assert settings.augment == "crop-flip" and (recipe.lr, recipe.weight_decay) == (0.1, 1e-3)
    assert TrainSettings.from_config(SurrogateConfig(), "surrogate", Digits()).augment == "none"
    with pytest.raises(ConfigError, match="--surrogate.recipe 'sgd'"):
        TrainSettings.from_config(SurrogateConfig(recipe="sgd"), "surrogate", Digits())


def test_fit_moves_the_data_to_the_device_once_before_the_first_batch(one_thread, monkeypatch):
    import stealbench.training as training

    assert not training.fits_on(torch.device("cpu"), 1)  # CPU data is never copied
    calls = []
    real_to, real_iter = ShuffledBatches.to, ShuffledBatches.__iter__
    monkeypatch.setattr(training, "fits_on", lambda device, nbytes: True)  # as on a GPU with room to spare
    monkeypatch.setattr(ShuffledBatches, "to", lambda self, device: calls.append("to") or real_to(self, device))
    monkeypatch.setattr(ShuffledBatches, "__iter__", lambda self: calls.append("iter") or real_iter(self))
    x, t = tiny_data(32)
    fit(tiny_net(), x, t, 2, TrainSettings(batch_size=16, trainer={"accelerator": "cpu"}), seed=0)
    assert calls.count("to") == 1 and calls[0] == "to"  # one transfer, before Lightning touches any batch


def test_a_net_trained_further_trains_in_train_mode(one_thread):
    """fit returns nets in eval mode; fine-tuning one (warm starts) must still train with batch-norm statistics
    updating and dropout on, not in the mode the last call left it in."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.BatchNorm1d(8),
                              torch.nn.Linear(8, 3))
    x, targets = torch.rand(64, 1, 4, 4), F.one_hot(torch.arange(64) % 3, 3).float()
    settings = TrainSettings(batch_size=16, trainer={"accelerator": "cpu"})
    net = fit(net, x, targets, 1, settings, seed=0)
    assert not net.training
    before = net[2].running_mean.clone()
    net = fit(net, x, targets, 1, settings, seed=1)
    assert not torch.equal(net[2].running_mean, before)
