"""A moto S3 server on a free loopback port, in this process, for the object-store tests.

In this process rather than as a child: the blob store's `modified` is the object's LastModified,
which only the server's own clock sets, and the port suite ages blobs (`S3Server.age`).
"""

from __future__ import annotations

import datetime
import uuid
from typing import TYPE_CHECKING

import boto3
from integration.harness import free_port, unavailable
from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends
from moto.server import ThreadedMotoServer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class S3Server:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    def start(self) -> None:
        try:
            self._server.start()
            self.client().list_buckets()
        except Exception as error:  # noqa: BLE001 - any failure to start is the same missing prerequisite
            unavailable(f"the moto S3 server did not start: {error}")

    def stop(self) -> None:
        self._server.stop()

    def client(self) -> S3Client:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        )

    def new_bucket(self) -> str:
        name = f"test-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def age(self, bucket: str, key: str, seconds: float) -> None:
        """Make the object look written `seconds` ago (moto keeps LastModified in UTC without a zone)."""
        then = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(seconds=seconds)
        s3_backends[DEFAULT_ACCOUNT_ID]["aws"].get_object(bucket, key).last_modified = then  # type: ignore[union-attr]
