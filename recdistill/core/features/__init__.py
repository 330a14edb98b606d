"""The one feature schema and encoder shared by training, teacher serving and student serving."""

from recdistill.core.features.encoder import Encoder, MappedContext
from recdistill.core.features.request import RankRequest, parse_rank_request
from recdistill.core.features.schema import FeatureSchema

__all__ = ["Encoder", "FeatureSchema", "MappedContext", "RankRequest", "parse_rank_request"]
