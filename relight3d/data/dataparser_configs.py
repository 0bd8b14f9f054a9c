"""Dataparsers registered with nerfstudio through the ``nerfstudio.dataparser_configs`` entry point."""

from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from relight3d.data.objaverse import ObjaverseDataParserConfig
from relight3d.data.single_image import SingleImageDataParserConfig

objaverse_dataparser = DataParserSpecification(
    config=ObjaverseDataParserConfig(),
    description="Objaverse / Neural Gaffer object folder: {view:03d}_RT.npy + {view:03d}_{light:03d}_{env}.png",
)
single_image_dataparser = DataParserSpecification(
    config=SingleImageDataParserConfig(),
    description="A single RGBA image with a configurable input camera (single-image reconstruction)",
)
