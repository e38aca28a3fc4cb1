"""Views: how one raw sample becomes one embedding (image, frames, depth views, points), the image
transforms and the depth renderer."""
