"""The one feature schema and encoder shared by training, teacher serving and student serving."""

from recdistill.features.encoder import Encoder, MappedContext
from recdistill.features.request import RankRequest, parse_rank_request
from recdistill.features.schema import FeatureSchema

__all__ = ["Encoder", "FeatureSchema", "MappedContext", "RankRequest", "parse_rank_request"]
