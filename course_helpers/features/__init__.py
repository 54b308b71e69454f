"""Lesson 07: scalable data processing and feature engineering.

``data`` writes seeded day-partitioned Parquet events; ``engines`` computes one feature set with
pandas, polars, DuckDB and Dask; ``pit`` joins labels point-in-time and shows leakage; ``store``
materialises features into an online store; ``bench`` measures engines under a memory budget;
``cluster`` starts a Dask scheduler and workers through the supervisor.

Importing this package is cheap: engines are imported when used.
"""
