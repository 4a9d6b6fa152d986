"""Which saved model a row starts from: the warm-start sources of fused rows and the
members of ensembles."""

import os

MODALITIES = ("image", "text")


class WarmStarts:
    """Saved `.keras` models that later rows start from.

    A fused row's branch starts from, in this order: the file the user named
    (--image-init / --text-init), the model --pretrain-image trained for that branch, the
    first unimodal row of this run with the same (modality, branch). An ensemble combines
    the most accurate unimodal row of each modality.
    """

    def __init__(self, explicit=None, pretrained=None, from_rows=True):
        self._explicit = {m: p for m, p in (explicit or {}).items() if p}  # modality -> path
        self._pretrained = dict(pretrained or {})  # (modality, branch) -> path
        self._from_rows = from_rows  # False: --no-warm-start (the user's and pretrained files still apply)
        self._rows = {}  # (modality, branch) -> path of the first unimodal row saving one
        self._best = {}  # modality -> (test accuracy, path)

    @classmethod
    def for_config(cls, config, pretrained=None):
        """pretrained: {(modality, branch): .keras path} of the models --pretrain-image trained."""
        return cls(explicit={m: getattr(config, f"{m}_init") for m in MODALITIES},
                   pretrained=pretrained, from_rows=config.warm_start)

    def add_row(self, modality, branch, path):
        """A unimodal row of the plan will save its model at `path`."""
        self._rows.setdefault((modality, branch), path)

    def source_for(self, modality, branch):
        """The .keras path a fused row's `modality` branch (`branch`) starts from, or None."""
        rows = self._rows if self._from_rows else {}
        return (self._explicit.get(modality) or self._pretrained.get((modality, branch))
                or rows.get((modality, branch)))

    def is_row(self, path):
        """Whether `path` is the saved model of a unimodal row of this run (a model trained
        on this data, with this data's classes), not a user's file or a pretrained one."""
        return path in self._rows.values()

    def record(self, modality, path, accuracy):
        """A finished unimodal row's saved model and its test accuracy (ties: the first wins)."""
        if accuracy > self._best.get(modality, (-1.0, None))[0]:
            self._best[modality] = (accuracy, path)

    def best(self, modality):
        """The .keras path of this run's most accurate `modality`-only row."""
        if modality not in self._best:
            raise ValueError(f"No finished {modality}-only row of this run has a saved model to combine "
                             f"(expected one in rows/*.keras); recorded: {sorted(self._best) or 'none'}.")
        return self._best[modality][1]


def source_name(path):
    """How a row names its warm-start source: the file name without `.keras`."""
    return os.path.splitext(os.path.basename(path))[0]
