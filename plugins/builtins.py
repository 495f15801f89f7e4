"""The built-in components, registered through the public hooks by import path.

A ``"module:attr"`` factory is imported on first use, so listing the components
(``vaebench plugins``) imports no torch; the modules named here hold the components.
"""

from __future__ import annotations

from vaebench import hookimpl

P = "vaebench.plugins"


@hookimpl
def vaebench_register_encoders(register):
    register("mlp", f"{P}.mlp:MLPEncoder")
    register("conv", f"{P}.conv:ConvEncoder")


@hookimpl
def vaebench_register_decoders(register):
    register("mlp", f"{P}.mlp:MLPDecoder")
    register("conv", f"{P}.conv:ConvDecoder")


@hookimpl
def vaebench_register_priors(register):
    register("normal", f"{P}.priors:StandardNormalPrior")
    register("mog", f"{P}.priors:MixtureOfGaussiansPrior")
    register("vamp", f"{P}.priors:VampPrior")
    register("flow", f"{P}.priors:FlowPrior")


@hookimpl
def vaebench_register_datasets(register):
    register("digits", f"{P}.datasets:digits")
    register("synthetic", f"{P}.datasets:synthetic")


@hookimpl
def vaebench_register_likelihoods(register):
    register("bernoulli", f"{P}.likelihoods:Bernoulli")
    register("gaussian", f"{P}.likelihoods:Gaussian")
    register("categorical", f"{P}.likelihoods:Categorical")
    register("dlogistic", f"{P}.dlogistic:DiscretizedLogisticMixture")


@hookimpl
def vaebench_register_models(register):
    register("vae", f"{P}.objectives:vae")
    register("iwae", f"{P}.objectives:iwae")
    register("ae", f"{P}.objectives:autoencoder")
    register("dae", f"{P}.objectives:denoising_autoencoder")
    register("sae", f"{P}.objectives:sparse_autoencoder")


@hookimpl
def vaebench_register_optimizers(register):
    for name in ("Adam", "AdamW", "Adamax", "RMSprop", "SGD"):
        register(name.lower(), f"torch.optim:{name}")
    register("adamnormgrad", f"{P}.optimizers:AdamNormGrad")


@hookimpl
def vaebench_register_schedules(register):
    lr_scheduler = "torch.optim.lr_scheduler"
    register("multistep", f"{lr_scheduler}:MultiStepLR")
    register("exponential", f"{lr_scheduler}:ExponentialLR")
    register("cosine", f"{P}.schedules:cosine")
    register("plateau", f"{lr_scheduler}:ReduceLROnPlateau")


@hookimpl
def vaebench_register_executors(register):
    register("local", f"{P}.executors:local_executor")
    register("ray", f"{P}.executors:RayExecutor")


@hookimpl
def vaebench_register_trackers(register):
    register("mlflow", f"{P}.trackers:MLflowTracker")
    register("tensorboard", f"{P}.trackers:TensorBoardTracker")


@hookimpl
def vaebench_register_tasks(register):
    from vaebench.tasks import builtin_factories

    for name, factory in builtin_factories().items():
        register(name, factory)
