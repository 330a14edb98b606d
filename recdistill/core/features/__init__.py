"""The one feature schema and encoder shared by training, teacher serving and student serving."""

from recdistill.core.features.encoder import Encoder, MappedContext
from recdistill.core.features.request import RequestTypes, request_types
from recdistill.core.features.schema import FeatureSchema
from recdistill.core.features.spec import SchemaSpec, load_schema_spec

__all__ = ["Encoder", "FeatureSchema", "MappedContext", "RequestTypes", "SchemaSpec", "load_schema_spec",
           "request_types"]
