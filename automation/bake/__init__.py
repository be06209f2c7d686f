"""Bake node AMIs: model + prefetched images on an EKS-optimized AL2023 base."""
