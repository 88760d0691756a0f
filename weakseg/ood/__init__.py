"""Hard out-of-distribution data for W-OoD (dissertation Chapter 4): the candidate pool, mining by classifier
score, the review-decision file, seeded K-means and the metric-learning losses. Imports no tier."""
