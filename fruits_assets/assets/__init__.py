"""The asset graph: raw_images -> labeled_images -> mobilenet_features -> pca_model -> pca_features_csv."""
