from runtime.service import run_service
from services.marketdata.main import SPEC

run_service(SPEC)
