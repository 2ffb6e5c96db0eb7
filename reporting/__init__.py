"""The finance report: one billing period of the warehouse as a self-contained HTML page.

``finance_report`` reads the warehouse into plain dataclasses (exact ``Decimal`` money),
``charts`` turns them into Vega-Lite specs, ``html`` writes the page with the chart library
inlined, so the file opens anywhere without a network.
"""
