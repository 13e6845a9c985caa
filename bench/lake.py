"""The processed Iceberg table for the normalize runs of the bench.

The catalog is the embedded stack's Glue (moto, in this process); the tables live on local disk
(``file://`` locations), as the peers' outputs do, so the comparison is the work, not S3's.
"""
import os
import uuid

DATABASE = "bench"


class BenchLake:
    def __init__(self, work):
        from local import embedded

        self.work = work
        self.stack = embedded.start(work_dir=os.path.join(work, "stack"))
        self.stack.client("glue").create_database(DatabaseInput={"Name": DATABASE})
        self.env = dict(os.environ, AWS_ENDPOINT_URL=self.stack.endpoint_url, AWS_ACCESS_KEY_ID="testing",
                        AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1")

    def new_table(self):
        """A fresh, empty table (as the deploy defines it); returns its name."""
        from chalicelib import lake_table
        from deploy import lake_table as deploy_lake_table

        name = "processed_%s" % uuid.uuid4().hex[:8]
        location = os.path.join(self.work, "lake", name)
        os.makedirs(location, exist_ok=True)
        schema = deploy_lake_table.iceberg_schema()
        self.catalog().create_table((DATABASE, name), schema=schema, location="file://" + location,
                                    partition_spec=deploy_lake_table.partition_spec(schema),
                                    properties=lake_table.table_properties(86400))
        return name

    def catalog(self):
        from pyiceberg.catalog.glue import GlueCatalog

        return GlueCatalog("bench", client=self.stack.client("glue"))

    def stats(self, table):
        """Row count and sums of a table, read back through its metadata."""
        import pyarrow.compute as pc

        data = self.catalog().load_table((DATABASE, table)).scan().to_arrow()
        return {"rows": data.num_rows, "shipping_cost": pc.sum(data["shipping_cost"]).as_py(),
                "shipping_distance": pc.sum(data["shipping_distance"]).as_py(),
                "quantity": pc.sum(data["quantity"]).as_py(),
                "data_files": len(list(self.catalog().load_table((DATABASE, table)).scan().plan_files()))}

    def close(self):
        self.stack.stop()
