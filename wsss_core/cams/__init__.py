"""Stage 2, relevance maps ("CAMs"): for every training image and every class present in it, a
class-specific relevance map over the patch grid, with the transformer attribution of Chefer,
Gur & Wolf (CVPR 2021) or a baseline of the same paper. ``relevance`` holds the entry point
``explain`` and the forward pass and relevance backward it shares with every method;
``methods`` the methods themselves and their registry (name, gradients, class-agnostic,
function); ``lrp`` the layer-wise relevance rules; ``support`` the one check of which ViTs the
methods can walk; ``multiscale`` multi-scale and flip inference; ``store`` the HDF5 store of
the maps; ``images`` the maps of RGB images with a saved classifier (extract_cams, and
``wsss explain`` for image files)."""
