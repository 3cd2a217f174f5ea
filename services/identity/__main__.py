from runtime.service import run_service
from services.identity.main import SPEC

run_service(SPEC)
