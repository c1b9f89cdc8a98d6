"""Find the de-identification policy and pseudonym secret of a dataset (interface).

``DeidPolicies.for_dataset(dataset)`` answers the policy carried on the dataset's
ResearchStudy (extension ``dataset-deidentification``) and the dataset's secret,
creating the secret on first use. A dataset without a policy, and ``None`` (an
instance stored without a dataset), get ``settings.deid.default_profile``.
"""

from __future__ import annotations

from server.core.deid.policy import DeidPolicy
from server.settings import Settings


class DeidPolicies:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def for_dataset(self, dataset: str | None) -> tuple[DeidPolicy, str]:
        """The policy and secret to apply to an instance stored into ``dataset``."""
        raise NotImplementedError("dataset policies not built yet")
