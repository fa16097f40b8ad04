"""Which EnCodecMAE computes the prompts of a checkpoint: its own, unless the user insists.

An EnCodecGPT model is conditioned on prompt vectors from the EnCodecMAE it was trained with;
prompts from another one (``base`` for the AudioSet model, trained with ``base-st``) lie in
another embedding space and give wrong sound without any error. The pairing is known for the
published models, and recorded in our exported folders and training checkpoints
(:class:`engine.model.loading.checkpoint.LoadedCheckpoint`); for a bare original file it is
unknown, and the engine says so.
"""

from __future__ import annotations

from engine.errors import UserError
from engine.model.encodecmae import DEFAULT_ENCODECMAE
from engine.model.loading.published import encodecmae_name


def choose_encodecmae(trained_with: str | None, how_known: str, requested: str | None,
                      force: bool = False, model: str = "the checkpoint") -> tuple[str, str | None]:
    """The EnCodecMAE to embed prompts with, and a warning to print (or None).

    Args:
        trained_with: the EnCodecMAE the model was trained with, None when unknown.
        how_known: ``"published"`` or ``"recorded"`` (said in messages).
        requested: ``--encodecmae`` as given, None when not given.
        force: ``--force-encodecmae``: use ``requested`` even when it is not the model's own.
        model: how messages name the model.

    Returns:
        (EnCodecMAE source, warning line or None).

    Raises:
        UserError: ``requested`` is known to differ from the model's own and ``force`` is off.
    """
    if trained_with is None:
        chosen = requested or DEFAULT_ENCODECMAE
        return chosen, (f"WARNING: {model}: which EnCodecMAE it was trained with is unknown "
                        f"(a bare checkpoint file records none); embedding prompts with "
                        f"{chosen}. If it was another one, pass it with --encodecmae.")
    if requested is None:
        return trained_with, None
    want, have = encodecmae_name(requested), encodecmae_name(trained_with)
    if want is not None and have is not None and want == have:
        return requested, None
    if want is None or have is None:  # a local folder: nothing to compare names with
        return requested, (f"WARNING: {model} was trained with EnCodecMAE {trained_with} "
                           f"({how_known}); cannot tell whether {requested} is the same model.")
    if not force:
        raise UserError(f"--encodecmae {requested}: {model} was trained with EnCodecMAE "
                        f"{trained_with} ({how_known}); prompts from {requested} lie in another "
                        "embedding space. Leave out --encodecmae, or pass --force-encodecmae")
    return requested, (f"WARNING: --force-encodecmae: {model} was trained with EnCodecMAE "
                       f"{trained_with}; embedding prompts with {requested} anyway.")
