"""Small, fast configurations of every registered network, shared by the network, module and CLI tests."""

# name -> (small constructor arguments, an input size the network takes). Every registered
# network must be here, so every network gets the shape, gradient and overfit tests below.
SMALL = {
    "unet3d": ({"base_features": 4}, (16, 24, 32)),
    "vnet": ({"dropout": 0.0}, (16, 16, 32)),
    "vnet_light": ({"dropout": 0.0}, (8, 16, 24)),
    "segresnet": ({"init_filters": 8}, (8, 16, 24)),
    "densenet3d": ({"dropout": 0.0, "kernels": [4, 4, 8, 8], "fully_connected": [16, 8]}, (10, 11, 13)),
    "densenet3d_early_fusion": ({"dropout": 0.0, "kernels": [4, 4, 8, 8], "fully_connected": [16, 8]}, (10, 11, 13)),
    "densenet3d_late_fusion": ({"dropout": 0.0, "kernels": [4, 4, 8, 8], "fully_connected": [16, 8]}, (10, 11, 13)),
    "hyperdensenet": ({"dropout": 0.0, "kernels": [4, 4, 8, 8], "fully_connected": [16, 8]}, (10, 11, 13)),
    "highresnet": ({}, (8, 12, 16)),
    "resnet3d_vae": ({"init_filters": 8, "input_image_size": (16, 16, 32)}, (16, 16, 32)),
    "dynunet": ({"filters": [4, 8, 16, 32, 64]}, (16, 16, 32)),
    "swinunetr": ({"feature_size": 12, "depths": (1, 1, 1, 1), "window_size": 4}, (64, 64, 64)),
    "densevoxelnet": ({"init_features": 8, "growth_rate": 8, "layers_per_block": 2, "deconv_channels": (16, 8),
                       "dropout": 0.0}, (8, 16, 24)),
    "skipdensenet3d": ({"init_features": 8, "growth_rate": 4, "layers_per_block": 2, "dropout": 0.0}, (16, 16, 32)),
    "med3d": ({"base_features": 8}, (8, 16, 24)),
    "unet2d": ({"base_features": 4, "slice_axis": 0}, (3, 16, 32)),
}
# One stream per modality: these need at least two input channels.
MULTI_STREAM = {"densenet3d_early_fusion", "densenet3d_late_fusion", "hyperdensenet"}
