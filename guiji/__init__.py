"""归集: reading deliveries, standardising them and merging them into the base libraries by authority.

Plain functions over polars frames and the warehouse; the Dagster assets in ``assets/`` wire them.
"""
