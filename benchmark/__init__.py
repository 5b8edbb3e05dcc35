"""Data, scores, results and tracking for the robustness suite (everything that is not a metric or an attack)."""
